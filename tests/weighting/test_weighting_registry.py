"""Registry of weighting methods: names, build, unknown names."""

import pytest

import mtrl.weighting as W
from mtrl.registry import UnknownNameError

EXPECTED = {
    "equal", "random", "uncertainty", "dwa", "gradnorm", "pcgrad", "mgda", "cagrad", "imtl_g",
    "nash_mtl", "famo", "gradient_reversal", "upgrad",
}  # fmt: skip


def test_names_and_build():
    assert set(W.names()) >= EXPECTED
    assert W.names() == sorted(W.names())
    for name in W.names():
        method = W.build(name, 3)
        assert isinstance(method, W.LossWeighting)
        assert method.num_tasks == 3


def test_unknown_name_lists_choices():
    with pytest.raises(UnknownNameError, match=r"valid: .*pcgrad"):
        W.build("pcgard", 2)


def test_bad_arguments():
    with pytest.raises(ValueError):
        W.build("mgda", 2, normalization="bogus")
    with pytest.raises(ValueError):
        W.build("equal", 0)
    with pytest.raises(ValueError, match="expected 3 losses"):
        import torch

        W.build("equal", 3).backward(torch.ones(2, requires_grad=True))
