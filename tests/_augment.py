"""What the augmentation tests share (tests/test_augment_*.py): the two backends every test runs
on, model-frame toy jets and seeded generators."""

import pytest
import torch

from clrdist.physics.augment import set_backend
from clrdist.physics.frame import to_model_frame


@pytest.fixture(autouse=True, params=["kernel", "torch"])
def backend(request):
    """Every property test runs on both backends of the JetCLR steps: the fused C kernel (CPU
    float32 batches) and torch ops."""
    previous = set_backend(request.param)
    yield request.param
    set_backend(previous)


def jets(B=16, P=20, seed=0, n_min=0):
    """Model-frame jets: pT in GeV (1-200), eta/phi ~ 0.3 around the centroid, padded."""
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(n_min, P + 1, (B,), generator=g)
    mask = torch.arange(P)[None] < n[:, None]
    x = torch.stack([torch.rand(B, P, generator=g) * 199 + 1,
                     torch.randn(B, P, generator=g) * 0.3,
                     torch.randn(B, P, generator=g) * 0.3], -1)
    x = torch.where(mask[..., None], x, torch.zeros(()))
    return to_model_frame(x, mask), mask


def gen(seed=1):
    return torch.Generator().manual_seed(seed)
