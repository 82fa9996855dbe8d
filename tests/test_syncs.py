"""The sync counter flags every host sync / data-dependent-shape op, and nothing else."""

import pytest
import torch

from clrdist.syncs import count_syncs

x = torch.randn(6, 3)
v = torch.tensor([0.5, -1.0, 2.0, 0.0])

FLAGGED = {
    "nonzero": lambda: torch.nonzero(v),
    "argwhere": lambda: torch.argwhere(v),
    "masked_select": lambda: torch.masked_select(v, v > 0),
    "unique": lambda: torch.unique(v),
    "unique_consecutive": lambda: torch.unique_consecutive(v),
    "item": lambda: v.sum().item(),
    "float": lambda: float(v.sum()),
    "int": lambda: int(v.argmax()),
    "bool": lambda: bool(v[0] > 0),
    "if_tensor": lambda: 1 if (v > 0).any() else 0,
    "equal": lambda: torch.equal(v, v),
    "allclose": lambda: torch.allclose(v, v),
    "bool_index": lambda: x[x[:, 0] > 0],
    "bool_index_put": lambda: x.clone().__setitem__(x > 0, 0.0),
    "repeat_interleave_tensor": lambda: torch.repeat_interleave(torch.tensor([1, 2, 0])),
    "repeat_interleave_self_tensor": lambda: v.repeat_interleave(torch.tensor([1, 2, 0, 1])),
    "tolist": lambda: v.tolist(),
    "numpy": lambda: v.numpy(),
    "meta_to_cpu": lambda: torch.empty(3, device="meta").to("cpu"),
    "meta_cpu_copy_": lambda: torch.empty(3).copy_(torch.empty(3, device="meta")),
}


@pytest.mark.parametrize("name", sorted(FLAGGED))
def test_flags_each_sync(name):
    with count_syncs() as c:
        try:
            FLAGGED[name]()
        except NotImplementedError:  # a meta tensor has no data to copy: counted before it fails
            assert name.startswith("meta")
    assert c.count >= 1, name
    assert all(": " in op for op in c.ops)


CLEAN = {
    "arithmetic": lambda: (x * 2 + 1).exp().sum(0) / 3,
    "matmul_softmax": lambda: torch.softmax(x @ x.T, -1),
    "where_mask": lambda: torch.where(x > 0, x, torch.zeros_like(x)),
    "int_index": lambda: x[torch.tensor([0, 2])],
    "topk_gather": lambda: x.gather(0, x.topk(2, dim=0).indices),
    "repeat_interleave_int": lambda: v.repeat_interleave(2),
    "repeat_interleave_output_size": lambda: v.repeat_interleave(
        torch.tensor([1, 2, 0, 1]), output_size=4
    ),
    "assert_async": lambda: torch._assert_async(torch.tensor(True)),
    "cpu_to_meta": lambda: x.to("meta"),
    "cumsum_scatter": lambda: torch.zeros(4).scatter_add(0, torch.tensor([0, 0, 3]), v[:3]),
    "backward": lambda: (x.clone().requires_grad_() ** 2).sum().backward(),
}


@pytest.mark.parametrize("name", sorted(CLEAN))
def test_plain_ops_are_not_flagged(name):
    with count_syncs() as c:
        CLEAN[name]()
    assert c.count == 0, c.ops


def test_counts_each_occurrence_and_names_the_op():
    with count_syncs() as c:
        for _ in range(3):
            torch.nonzero(v)
        v.sum().item()
    assert c.count == 4
    assert c.ops[0].startswith("nonzero: ")
    assert c.ops[-1].startswith("_local_scalar_dense: ")
    assert c.summary()[c.ops[0]] == 3


def test_mode_is_removed_after_the_block():
    with count_syncs() as c:
        pass
    torch.nonzero(v)
    v.tolist()
    assert c.count == 0
