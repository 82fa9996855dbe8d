"""Jet physics on arrays and tensors: observables, the model frame, the augmentations.

``INPUT_FEATURES`` lives here, not in a torch module, so that the config can check
``model.input_dim`` against it without importing torch.
"""

# model.input_features -> the model input columns it makes from (pT, eta, phi); the store's extra
# particle features follow them (clrdist.physics.frame.input_features)
INPUT_FEATURES = {"pt": 3, "log": 6, "ptfrac": 5, "boost": 5}
