"""Public file formats -> sample store (``clrdist data convert {toptag,lhco,adc2021}``).

Layouts (see docs/reference.md):

- ``toptag``: top tagging reference dataset; pandas HDFStore key ``table``; columns E_i, PX_i,
  PY_i, PZ_i (i = 0..199, real where E > 0), truth*, ttv, is_signal_new (1 top, 0 QCD).
  -> kind ``jet``, particles (pT, eta, phi) of the P hardest constituents (default 50),
  features jet_pt, jet_eta, jet_phi, jet_mass (from all constituents), n_constituents.
- ``lhco``: LHC Olympics 2020 R&D (or black box); one pandas frame under any key, one row per
  event: up to 700 (pT, eta, phi) triplets, zero padded, then the label (1 signal) when the
  column count is 3k + 1, no label (-1) when it is 3k. Every event is clustered with FastJet
  (anti-kT, R = 0.8); the two leading jets' P hardest constituents each (default 50, so 100
  slots: J1 first, then J2) are stored, with m_jj, pT/eta/phi/mass of J1, J2 and their
  N-subjettiness ratios tau21, tau32 (exclusive-kT axes, R0 = 0.8).
- ``adc2021``: CMS ADC2021; h5 dataset ``Particles`` (N, 19, 4) = (pT, eta, phi, class); the
  fixed slot layout (MET, 4 e, 4 mu, 10 jets) is kept because slot position carries the object
  type; features MET, MET phi, object counts, H_T. Labels from the file name (background 0,
  signals 1..4, black box -1) unless ``label=`` is given.

Files are read in blocks (memory stays bounded whatever the file size); every block is checked
(NaN/inf, negative pT or energy, unknown labels) and any problem is a :class:`ConvertError`
naming the file and the problem. The store is written under a temporary name, so a failed
conversion leaves nothing at the output path. Several input files append into one store;
provenance records each source's name, size and sha256 and the converter version. The store's
samples are in a seeded random order (``seed``, recorded in ``provenance.order``), not the
files' order.

Modules: :mod:`.common` (:class:`ConvertError`, the block readers and the value checks every
format uses), one per format, :mod:`.toptag`, :mod:`.lhco` and :mod:`.adc2021` (a file's layout
checked, a block of rows -> samples), and :mod:`.driver` (the formats table and
:func:`convert`); every name is importable from here.
"""

from __future__ import annotations

from clrdist.data.convert.adc2021 import ADC_LABELS, adc_label_from_name
from clrdist.data.convert.common import Block, ConvertError
from clrdist.data.convert.driver import (
    CONVERTER_VERSION,
    FORMATS,
    Format,
    convert,
    iter_blocks,
    sha256_file,
)

__all__ = [
    "ADC_LABELS",
    "CONVERTER_VERSION",
    "FORMATS",
    "Block",
    "ConvertError",
    "Format",
    "adc_label_from_name",
    "convert",
    "iter_blocks",
    "sha256_file",
]
