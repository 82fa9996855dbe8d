"""The fused C kernel of the JetCLR augmentations (clrdist.physics.kernel): build, generator,
agreement with the torch path, failure modes. The property tests of test_augment_*.py run on both
backends; these cover what is particular to the kernel."""

import platform

import numpy as np
import pytest
import torch
from scipy import stats

from clrdist.config import AugmentSpec, ConfigError, load_config
from clrdist.physics import augment, kernel
from clrdist.physics.augment import AUGMENTATIONS, apply_views, build_view
from clrdist.physics.frame import to_model_frame
from clrdist.runtime import tune_malloc

JETCLR_VIEW = [AugmentSpec(name="collinear_split"), AugmentSpec(name="collinear_split"),
               AugmentSpec(name="rotate"), AugmentSpec(name="smear_soft"), AugmentSpec(name="translate")]


def jets(B=64, P=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(1, P + 1, (B,), generator=g)
    mask = torch.arange(P)[None] < n[:, None]
    x = torch.stack([torch.rand(B, P, generator=g) * 199 + 1, torch.randn(B, P, generator=g) * 0.3,
                     torch.randn(B, P, generator=g) * 0.3], -1)
    return to_model_frame(torch.where(mask[..., None], x, torch.zeros(())), mask), mask


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


def test_kernel_builds_here_and_is_the_cpu_default():
    assert kernel.available()  # gcc is on every machine of this project (and CI)
    x, mask = jets()
    for name in ("rotate", "smear_soft", "translate", "collinear_split"):
        k = build_view([AugmentSpec(name=name)], backend="kernel")(x, mask, gen())
        t = build_view([AugmentSpec(name=name)], backend="torch")(x, mask, gen())
        a = build_view([AugmentSpec(name=name)])(x, mask, gen())  # auto
        assert torch.equal(a[0], k[0]) and not torch.equal(k[0], t[0])
    # other dtypes and devices take the torch path whatever the backend
    assert not kernel.supports(x.double(), mask) and not kernel.supports(x.bfloat16(), mask)


def test_normals_are_standard_normal():
    z = kernel.normals(seed=123, row=4, n=200_000).astype(np.float64)
    assert z.shape == (2, 200_000)
    flat = z.ravel()
    assert stats.kstest(flat, "norm").pvalue > 1e-3
    assert abs(flat.mean()) < 5 / np.sqrt(flat.size) and abs(flat.var() - 1) < 5 * np.sqrt(2 / flat.size)
    # the tails, bin by bin (chi-square over 40 bins of the normal quantiles)
    edges = stats.norm.ppf(np.linspace(0, 1, 41))
    counts = np.histogram(flat, edges)[0]
    assert stats.chisquare(counts).pvalue > 1e-3
    # the two halves of a draw are independent, and so are neighbouring draws and streams
    assert abs(np.corrcoef(z[0], z[1])[0, 1]) < 0.01
    assert abs(np.corrcoef(z[0, :-1], z[0, 1:])[0, 1]) < 0.01
    other = kernel.normals(seed=123, row=5, n=200_000)
    assert abs(np.corrcoef(z[0], other[0])[0, 1]) < 0.01
    assert np.array_equal(kernel.normals(seed=123, row=4, n=1000), z[:, :1000])


def test_kernel_and_torch_agree_in_distribution():
    """Same jets through both backends: the same conservation laws, multiplicities and spreads."""
    x, mask = jets(B=512, P=40, seed=3)
    outs = {b: build_view(JETCLR_VIEW, backend=b)(x, mask, gen(9)) for b in ("kernel", "torch")}
    (yk, mk), (yt, mt) = outs["kernel"], outs["torch"]
    assert torch.equal(mk.sum(1), mt.sum(1))  # split counts are deterministic
    assert torch.allclose((yk[..., 0] * mk).sum(1), (x[..., 0] * mask).sum(1), rtol=1e-5)
    # spread of eta after the whole view, jet by jet: same distribution (two-sample KS)
    def spread(y, m):
        e = torch.where(m, y[..., 1], torch.nan)
        return (torch.nanmean(e, 1)).numpy()
    assert stats.ks_2samp(spread(yk, mk), spread(yt, mt)).pvalue > 1e-3


def test_same_generator_state_same_output_and_views_fuse():
    x, mask = jets()
    views = [build_view(JETCLR_VIEW, backend="kernel") for _ in range(2)]
    a = apply_views(views, x, mask, gen(5))
    b = apply_views(views, x, mask, gen(5))
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[0][0], a[1][0])  # the two views differ
    torch.manual_seed(0)  # generator None: torch's default generator
    c = views[0](x, mask)
    torch.manual_seed(0)
    assert torch.equal(views[0](x, mask)[0], c[0])


def test_non_zero_padding_and_holes_come_out_clean():
    x, mask = jets(B=32, P=20, seed=4)
    dirty = x + (~mask)[..., None] * 5.0  # garbage on padding
    y, m = build_view(JETCLR_VIEW, backend="kernel")(dirty, mask, gen())
    assert (y[~m] == 0).all() and torch.isfinite(y).all()


def test_build_view_checks_parameters_at_build_time():
    with pytest.raises(TypeError, match="width"):
        build_view([AugmentSpec(name="smear_soft", params={"width": 1.0})])
    with pytest.raises(TypeError, match="strength"):
        build_view([AugmentSpec(name="rotate", params={"strength": 2.0})])
    with pytest.raises(ValueError, match="backend"):
        build_view(JETCLR_VIEW, backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        augment.set_backend("fast")


def test_cache_is_written_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("CLRDIST_CACHE_DIR", str(tmp_path / "cache"))
    kernel._library.cache_clear()
    try:
        kernel.require()
        built = list((tmp_path / "cache").iterdir())
        assert len(built) == 1 and built[0].name.startswith("jetaug-") and built[0].suffix == ".so"
    finally:
        kernel._library.cache_clear()


def test_missing_compiler_falls_back_or_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("CLRDIST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setattr(augment, "_warned_unavailable", False)
    kernel._library.cache_clear()
    try:
        assert not kernel.available()
        with pytest.raises(kernel.KernelUnavailable, match="no-such-cc"):
            kernel.require()
        x, mask = jets()
        with pytest.raises(kernel.KernelUnavailable):
            build_view(JETCLR_VIEW, backend="kernel")(x, mask, gen())
        with pytest.warns(RuntimeWarning, match="torch augmentations"):
            y, m = build_view(JETCLR_VIEW, backend="auto")(x, mask, gen())
        t = build_view(JETCLR_VIEW, backend="torch")(x, mask, gen())
        assert torch.equal(y, t[0]) and torch.equal(m, t[1])
        assert not list((tmp_path / "cache").glob("*.tmp"))  # nothing half-written left behind

        # a config that asks for the kernel is refused before any cluster starts
        from clrdist.train.trainer import check_components

        cfg_file = tmp_path / "c.yaml"
        cfg_file.write_text("augment:\n  backend: kernel\n")
        with pytest.raises(ConfigError, match="augment.backend"):
            check_components(load_config(cfg_file))
    finally:
        kernel._library.cache_clear()


def test_config_rejects_unknown_backend(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("augment:\n  backend: gpu\n")
    with pytest.raises(ConfigError, match="augment.backend"):
        load_config(cfg_file)


def test_single_augmentations_match_their_one_step_views():
    x, mask = jets()
    for name in ("rotate", "smear_soft", "translate", "collinear_split"):
        a = AUGMENTATIONS[name](x, mask, gen(2))
        b = build_view([AugmentSpec(name=name)])(x, mask, gen(2))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_tune_malloc(monkeypatch):
    monkeypatch.setenv("CLRDIST_TUNE_MALLOC", "0")
    assert tune_malloc() is False
    monkeypatch.delenv("CLRDIST_TUNE_MALLOC")
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert tune_malloc() is True
