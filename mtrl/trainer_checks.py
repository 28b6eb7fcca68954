"""Checks of :class:`mtrl.trainer.Trainer`'s arguments that need the model and the weighting:
whether a gradient method works on the shared representation or on the shared parameters, and
what to say when the model shares nothing. Raised at construction, not at the first step."""

from __future__ import annotations

import warnings
from numbers import Integral

from torch import nn

from mtrl.architectures.base import MultiTaskModel
from mtrl.weighting.base import GradientAggregator


class NoSharedParametersWarning(UserWarning):
    """A gradient method on a model that shares no parameters: it trains as equal weighting."""


def whole_number(value: object, low: int) -> bool:
    """Whether ``value`` is an integer (numpy's too, not a bool) >= ``low``. A function, not an
    inline test: mypy reads ``not isinstance(n: int, Integral)`` as always true and then skipped
    the rest of ``Trainer.__init__`` as unreachable."""
    return isinstance(value, Integral) and not isinstance(value, bool) and int(value) >= low


def resolve_representation(
    model: MultiTaskModel, weighting: nn.Module, representation: bool | str
) -> bool:
    """Whether per-task gradients are taken w.r.t. the shared representation z (True) or the
    shared parameters: ``"auto"`` picks z for a gradient method on a model that has one."""
    supported = bool(getattr(model, "supports_features", False))
    method, name = type(weighting).__name__, type(model).__name__
    if getattr(weighting, "needs_features", False):  # GREAT: no parameter mode
        if supported and representation is False:
            raise ValueError(
                f"{method} needs the shared representation, which representation=False turns "
                "off: use representation='auto' or True"
            )
        if not supported:
            raise ValueError(
                f"{method} needs the shared representation: use a model with one (hard_sharing, "
                f"mmoe; {name} has none) and representation='auto' or True"
            )
        return True
    if representation == "auto":
        return supported and isinstance(weighting, GradientAggregator)
    if representation is True and not supported:
        raise ValueError(
            f"representation=True needs a model with one shared representation; {name} has "
            "none (use hard_sharing or mmoe)"
        )
    if representation not in (True, False):
        raise ValueError(f"representation must be 'auto', True or False, got {representation!r}")
    return bool(representation)


def check_sharing(model: MultiTaskModel, weighting: nn.Module, use_features: bool) -> None:
    """A model without shared parameters (soft sharing: one column per task) leaves GradNorm
    no layer to balance (an error here, not a traceback at the first step) and gradient
    aggregators nothing to combine (a warning: training is then equal weighting's)."""
    if use_features or list(model.shared_parameters()):
        return
    name, method = type(model).__name__, type(weighting).__name__
    if callable(getattr(weighting, "adopt_layer", None)) and not getattr(weighting, "layer", 1):
        raise ValueError(
            f"{method} balances gradient norms on a shared layer and {name} shares no "
            "parameters; use an architecture with shared parameters or a loss weighting"
        )
    if isinstance(weighting, GradientAggregator):
        warnings.warn(
            f"{method} combines the tasks' gradients on shared parameters; {name} shares "
            "none, so every task keeps its own plain gradient, as with equal weighting",
            NoSharedParametersWarning,
            stacklevel=3,  # the caller of Trainer(...)
        )
