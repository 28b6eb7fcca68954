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
        method = W.build(name, 3, **({"feature_dim": 4} if name == "great" else {}))
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


def test_option_types_are_checked_before_building():
    import numpy as np
    import torch

    from mtrl.architectures import build_mlp

    # wrong types name the option; they used to fail mid-training (GradNorm: alpha ** str)
    with pytest.raises(TypeError, match=r"GradNorm: alpha='abc' is str, expected float"):
        W.build("gradnorm", 2, alpha="abc")
    with pytest.raises(TypeError, match=r"min_losses=\['a', 'b'\] is list, expected a list of"):
        W.build("famo", 2, min_losses=["a", "b"])
    with pytest.raises(TypeError, match=r"c=True is bool, expected float"):
        W.build("famo", 2, c=True)
    with pytest.raises(TypeError, match=r"MMoE.mlp: num_experts=2.5 is float, expected int"):
        build_mlp("mmoe", 4, [8], [1, 1], num_experts=2.5)
    # numbers of any kind, tensors and lists where the annotation allows them
    W.build("gradnorm", 2, alpha=np.float32(1.0), lr=1)
    W.build("famo", 2, min_losses=torch.zeros(2))
    W.build("famo", 2, min_losses=[0, 1.5])
    assert build_mlp("mmoe", 4, [8], [1, 1], num_experts=np.int64(3)).num_tasks == 2


def test_a_fresh_registry_sorts_refuses_duplicates_and_suggests():
    from mtrl.registry import Registry

    reg = Registry("widget")

    class Zeta:
        pass

    class Alpha:
        pass

    reg.register("zeta")(Zeta)
    reg.register("alpha")(Alpha)
    reg.register("zeta")(Zeta)  # the same class again (a re-import) is fine
    assert reg.names() == ["alpha", "zeta"]  # sorted, not registration order
    assert "zeta" in reg and "zet" not in reg and None not in reg
    with pytest.raises(ValueError) as e:
        reg.register("zeta")(Alpha)
    # names who holds it and what to do (it said only "widget 'zeta' is already registered")
    assert str(e.value) == (
        f"widget 'zeta' is already registered to {__name__}.{Zeta.__qualname__}; register "
        f"{Alpha.__qualname__} under another name"
    )
    assert reg.get("zeta") is Zeta
    with pytest.raises(UnknownNameError) as e:
        reg.get("zeda")
    # plain text (KeyError would quote it), the close names, then every valid one
    assert str(e.value) == "unknown widget 'zeda' (did you mean zeta?); valid: alpha, zeta"
    with pytest.raises(UnknownNameError) as e:
        reg.get("qqqq")
    assert str(e.value) == "unknown widget 'qqqq'; valid: alpha, zeta"


def test_check_kwargs_unions_bools_and_list_items():
    from mtrl.registry import check_kwargs

    def fn(n: int = 1, m: int | None = None, xs: list[int] | None = None) -> None:
        pass

    check_kwargs([fn], {"n": 2, "m": 3, "xs": [1, 2]}, "F")  # one matching union member is enough
    check_kwargs([fn], {"m": None, "xs": None}, "F")
    with pytest.raises(TypeError, match=r"^F: n=True is bool, expected int$"):
        check_kwargs([fn], {"n": True}, "F")
    with pytest.raises(TypeError, match=r"^F: xs=\['a'\] is list, expected a list of int or None$"):
        check_kwargs([fn], {"xs": ["a"]}, "F")


def test_a_registry_needs_the_name_and_takes_a_definition_run_again():
    from mtrl.registry import Registry

    reg = Registry("widget")
    # a bare @reg.register silently replaced the class with the decorator, registering nothing
    with pytest.raises(TypeError, match=r"decorate with .register\('my_name'\), not a bare"):

        @reg.register  # type: ignore[arg-type]
        class Oops:
            pass

    # the same class definition run again (a notebook cell, importlib.reload, an exec'd docs
    # example) replaces its entry; it used to raise "already registered"
    source = "@reg.register('w')\nclass W:\n    pass\n"
    first, second = {"reg": reg, "__name__": "cell"}, {"reg": reg, "__name__": "cell"}
    exec(source, first)
    exec(source, second)
    assert reg.get("w") is second["W"] and first["W"] is not second["W"]
    with pytest.raises(ValueError, match=r"already registered to cell\.W"):
        exec(source, {"reg": reg, "__name__": "another_module"})


def test_a_method_missing_its_part_says_which_to_write():
    import torch

    class NoCombine(W.WeightedLoss):
        pass

    class NoWeights(W.GradientAggregator):
        pass

    class Total(W.WeightedLoss):
        def combine(self, losses):
            return losses.sum()  # the weights forgotten

    losses = torch.ones(2, requires_grad=True)
    # each used to be a bare NotImplementedError (or "iteration over a 0-d tensor")
    with pytest.raises(NotImplementedError, match=r"NoCombine must implement combine\(losses"):
        NoCombine(2).backward(losses)
    with pytest.raises(NotImplementedError, match=r"NoWeights must implement weights\(grads"):
        NoWeights(2).backward(losses * 2, [losses])
    with pytest.raises(NotImplementedError, match=r"LossWeighting must implement backward\("):
        W.LossWeighting(2).backward(losses)
    with pytest.raises(TypeError, match=r"Total.combine must return \(total, weights \(T,\)\)"):
        Total(2).backward(losses)


def test_a_missing_or_unknown_option_is_named_with_the_valid_ones():
    # Python's own messages named no option a config could set ("GREAT.__init__() missing 1
    # required positional argument: 'feature_dim'", "got an unexpected keyword argument")
    from mtrl.architectures import build_mlp
    from mtrl.registry import MissingOptionError

    with pytest.raises(
        MissingOptionError, match=r"^weighting 'great' needs feature_dim=\.\.\. "
    ) as e:
        W.build("great", 2)
    assert e.value.missing == ["feature_dim"]
    with pytest.raises(TypeError) as e:
        W.build("pcgrad", 2, sead=1)
    assert (
        str(e.value)
        == "weighting 'pcgrad' has no option 'sead'; its options: seed, reduction, batched"
    )
    with pytest.raises(
        TypeError,
        match=r"architecture 'mmoe' \(mlp\) has no option 'experts'; its options: num_experts,",
    ):
        build_mlp("mmoe", 4, [8], [1, 1], experts=3)


def test_check_arguments_edge_kinds():
    from mtrl.registry import MissingOptionError, Registry, check_arguments

    with pytest.raises(TypeError, match=r"widget registration needs a name: .* \(got ''\)"):
        Registry("widget").register("")  # an empty name cannot be selected from a config

    def positional_only(a, /, b=1):
        return a, b

    # a positional-only parameter cannot be passed by keyword: unknown as an option
    with pytest.raises(TypeError, match=r"^f has no option 'a'; its options: b$"):
        check_arguments(positional_only, (), {"a": 1}, "f")

    def keyword_only(x, *, c):
        return x, c

    with pytest.raises(MissingOptionError, match=r"^g needs c=\.\.\. \(no default\)$") as e:
        check_arguments(keyword_only, (1,), {}, "g")
    assert e.value.missing == ["c"]
    # callables without a readable signature (inspect raises ValueError) are not checked
    check_arguments(dict, (), {"anything": 1}, "dict")
