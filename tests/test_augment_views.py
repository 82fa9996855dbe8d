"""Views, the chains of augmentations a config names (clrdist.physics.augment.build_view): their
order, the fusing of identical views, the slot-major fast path (JetCLR's view, masks with holes,
empty jets, other dtypes, extra features), and the registry; on both backends
(tests/_augment.py)."""

import pytest
import torch
from _augment import backend, gen, jets  # noqa: F401  (backend: autouse, every test runs on both backends)

from clrdist.config import AugmentSpec
from clrdist.physics.augment import AUGMENTATIONS, build_view
from clrdist.physics.frame import centroid


def test_build_view_orders_specs_and_rejects_unknown_names():
    x, mask = jets()
    specs = [AugmentSpec(name="rotate"), AugmentSpec(name="collinear_split", params={"fill": 1.0})]
    view = build_view(specs, strength=1.0)
    y, m = view(x, mask, gen(3))
    g = gen(3)  # one generator, consumed in order
    y2, m2 = AUGMENTATIONS["rotate"](x, mask, g)
    y2, m2 = AUGMENTATIONS["collinear_split"](y2, m2, g, fill=1.0)
    assert torch.equal(y, y2) and torch.equal(m, m2)
    with pytest.raises(KeyError, match="rotate"):
        build_view([AugmentSpec(name="rotat")])
    dict_view = build_view([{"name": "translate", "params": {"width": 0.5}}])
    assert dict_view(x, mask, gen())[0].shape == x.shape


def test_apply_views_fuses_identical_views():
    from clrdist.physics.augment import apply_views

    x, mask = jets()
    spec = [AugmentSpec(name="rotate"), AugmentSpec(name="collinear_split")]
    views = [build_view(spec), build_view(spec), build_view([AugmentSpec(name="drop")])]
    outs = apply_views(views, x, mask, gen(4))
    assert len(outs) == 3 and all(o[0].shape == x.shape for o in outs)
    assert not torch.equal(outs[0][0], outs[1][0])  # independent draws per view
    # the fused call is the single view applied to the repeated batch
    y, m = views[0](x.repeat(2, 1, 1), mask.repeat(2, 1), gen(4))
    assert torch.equal(outs[0][0], y[: len(x)]) and torch.equal(outs[1][1], m[len(x):])


# ---- the slot-major fast path: views, masks with holes ---------------------------------------

JETCLR_VIEW = [AugmentSpec(name="collinear_split"), AugmentSpec(name="collinear_split"),
               AugmentSpec(name="rotate"), AugmentSpec(name="smear_soft"), AugmentSpec(name="translate")]


def test_jetclr_view_equals_its_steps_in_turn():
    x, mask = jets(B=64, P=30, seed=11)
    y, m = build_view(JETCLR_VIEW)(x, mask, gen(5))
    g = gen(5)
    y2, m2 = x, mask
    for spec in JETCLR_VIEW:
        y2, m2 = AUGMENTATIONS[spec.name](y2, m2, g)
    assert torch.equal(y, y2) and torch.equal(m, m2)
    assert y.is_contiguous() and (y[~m] == 0).all()


def holes(x, mask, seed=0):
    """The same jets with their slots shuffled (real constituents no longer first)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.rand(mask.shape, generator=g).argsort(1)
    return x.gather(1, order[..., None].expand_as(x)), mask.gather(1, order)


@pytest.mark.parametrize("name", ["rotate", "translate", "smear_soft", "collinear_split"])
def test_masks_with_holes(name):
    x, mask = jets(B=32, P=20, seed=12)
    xh, mh = holes(x, mask)
    assert not torch.equal(mh, torch.arange(20)[None] < mh.sum(1)[:, None])
    y, m = AUGMENTATIONS[name](xh, mh, gen(3))
    assert (y[~m] == 0).all() and (m | ~mh).all()
    assert torch.equal(y[..., 0].sum(1), xh[..., 0].sum(1)) or name == "collinear_split"
    assert torch.allclose((y[..., 0] * m).sum(1), (xh[..., 0] * mh).sum(1), rtol=1e-5)
    if name == "rotate":
        assert torch.allclose(centroid(y, m), centroid(xh, mh), atol=1e-5)
    if name == "collinear_split":
        assert torch.equal(m.sum(1), torch.minimum(torch.clamp(mh.sum(1), min=10), 2 * mh.sum(1)))
    # a view over the holes gives what its steps give in turn
    v, vm = build_view(JETCLR_VIEW)(xh, mh, gen(4))
    g = gen(4)
    v2, vm2 = xh, mh
    for spec in JETCLR_VIEW:
        v2, vm2 = AUGMENTATIONS[spec.name](v2, vm2, g)
    assert torch.equal(v, v2) and torch.equal(vm, vm2) and (v[~vm] == 0).all()


def test_empty_batch_and_empty_jets():
    x, mask = jets(B=8, P=10, seed=13)
    mask[:3] = False
    x = torch.where(mask[..., None], x, torch.zeros(()))
    for view in (build_view(JETCLR_VIEW), build_view(JETCLR_VIEW[2:])):
        y, m = view(x, mask, gen())
        assert torch.isfinite(y).all() and (y[~m] == 0).all() and not m[:3].any()
        y0, m0 = view(x[:0], mask[:0], gen())
        assert y0.shape == (0, 10, 3) and m0.shape == (0, 10)
    y, m = build_view(JETCLR_VIEW)(x[:3], mask[:3], gen())
    assert not m.any() and (y == 0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_jetclr_view_other_dtypes(dtype):
    x, mask = jets(B=32, P=30, seed=14)
    y, m = build_view(JETCLR_VIEW)(x.to(dtype), mask, gen())
    assert y.dtype == dtype and (y[~m] == 0).all() and torch.isfinite(y).all()
    n = mask.sum(1)
    assert torch.equal(m.sum(1), torch.minimum(torch.clamp(n, min=15), 4 * n).clamp(max=30))
    assert torch.allclose((y[..., 0].double() * m).sum(1), (x[..., 0].double() * mask).sum(1),
                          rtol=1e-12 if dtype == torch.float64 else 3e-2)


def test_apply_views_does_not_fuse_views_of_different_strength():
    from clrdist.physics.augment import apply_views

    x, mask = jets()
    views = [build_view(JETCLR_VIEW[2:], strength=1.0), build_view(JETCLR_VIEW[2:], strength=0.0)]
    (y1, _), (y0, m0) = apply_views(views, x, mask, gen())
    assert torch.allclose(y0, x, atol=1e-6) and torch.equal(m0, mask)
    assert not torch.allclose(y1, x, atol=1e-3)


def test_extra_features_are_carried():
    x, mask = jets(B=16, P=20, seed=15)
    extra = torch.where(mask, torch.rand(mask.shape, generator=torch.Generator().manual_seed(1)), 0.0)
    x4 = torch.cat([x, extra[..., None]], -1)
    for name in ("rotate", "translate", "smear_soft"):
        y, m = AUGMENTATIONS[name](x4, mask, gen())
        assert torch.equal(y[..., 3], x4[..., 3])
        y3, _ = AUGMENTATIONS[name](x, mask, gen())
        assert torch.equal(y[..., :3], y3)
    y, m = AUGMENTATIONS["collinear_split"](x4, mask, gen(), fill=1.0)
    for b in range(16):  # every child carries its source's extra feature
        for c in x4[b][mask[b]]:
            same = (y[b][m[b]][:, 1:3] == c[1:3]).all(-1)
            assert (y[b][m[b]][same, 3] == c[3]).all()


# ---- the registry and the View type ------------------------------------------------------------

def test_physics_modules_import_no_circle():
    """The modules of clrdist.physics import each other without a cycle: the augmentation modules
    share clrdist.physics.registry and never import each other's private helpers."""
    import ast
    from pathlib import Path

    import clrdist.physics

    root = Path(clrdist.physics.__file__).parent
    graph = {}
    for path in root.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "clrdist.physics":
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("clrdist.physics."):
                deps.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[2] for a in node.names if a.name.startswith("clrdist.physics.")}
        graph[path.stem] = deps & {p.stem for p in root.glob("*.py")}

    def reaches(start, goal, seen=()):
        return any(d == goal or (d not in seen and reaches(d, goal, (*seen, d))) for d in graph[start])

    assert not [m for m in graph if reaches(m, m)], graph
    assert graph["augment_event"] == {"frame", "registry"}


def test_build_view_gives_a_view_that_says_what_it_does():
    from clrdist.physics.augment import View, rotate, translate

    specs = [AugmentSpec(name="rotate"), AugmentSpec(name="translate", params={"width": 0.5})]
    view = build_view(specs, strength=0.5, backend="torch")
    assert isinstance(view, View)
    assert view.steps == ((rotate, {}), (translate, {"width": 0.5}))
    assert (view.strength, view.backend) == (0.5, "torch")
    assert view.key == build_view(specs, strength=0.5, backend="torch").key
    assert view.key != build_view(specs, strength=1.0, backend="torch").key
    assert "rotate, translate" in repr(view)
    # the event augmentations are registered as soon as clrdist.physics.augment is imported
    assert {"event_smear", "event_rotate"} <= set(AUGMENTATIONS)
