"""Loss and gradient weighting for multi-task learning (one file per method).

Every method is a :class:`LossWeighting` (an ``nn.Module``) with
``backward(losses (T,), shared_params=None, *, features=None, task_params=None) -> weights (T,)``:
it writes ``.grad`` (accumulating, like ``loss.backward()``) and returns the applied weights::

    weighting = mtrl.weighting.build("pcgrad", num_tasks=T).to(device)
    optimizer.zero_grad()
    losses = task_losses          # list of T scalars (fastest) or a stacked (T,) tensor
    weights = weighting.backward(losses, model.shared_parameters())   # or features=z (B, D)
    optimizer.step()

* ``names()`` lists the registered names, ``build(name, num_tasks, **kw)`` builds one; an unknown
  name raises :class:`mtrl.registry.UnknownNameError`.
* Gradient methods (pcgrad, mgda, cagrad, imtl_g, nash_mtl, upgrad) need ``shared_params`` or
  ``features=`` (representation mode: per-task gradients w.r.t. the trunk output, aggregated, then
  backpropagated through the trunk once). Task-specific parameters get the plain-sum gradient:
  ``task_params`` or, by default, every other leaf of the graph (above ``features``).
* State is in buffers/parameters, so ``state_dict()`` checkpoints it; move the weighting to the
  model's device. ``uncertainty``: put ``weighting.parameters()`` in your optimiser. ``gradnorm``
  and ``famo`` train their own parameters internally (FAMO: call ``update(new_losses)`` after
  ``optimizer.step()``). ``dwa``: call ``epoch_end()`` or pass ``steps_per_epoch``.
  ``great`` (adversarial gradient classifier) needs ``feature_dim`` and ``features=`` and trains
  its classifier internally.
* Pure functions on a ``(T, P)`` gradient matrix: ``pcgrad``, ``mgda``, ``cagrad``, ``imtl_g``,
  ``nash_mtl``, ``upgrad`` (and ``*_weights`` on its Gram matrix ``G G^T``).
"""

from __future__ import annotations

from mtrl.registry import UnknownNameError
from mtrl.weighting.base import WEIGHTINGS, GradientAggregator, LossWeighting, WeightedLoss
from mtrl.weighting.cagrad import CAGrad, cagrad, cagrad_weights
from mtrl.weighting.dwa import DWA
from mtrl.weighting.equal import Equal
from mtrl.weighting.famo import FAMO
from mtrl.weighting.gradient_reversal import GradientReversal, GradReverse, grad_reverse
from mtrl.weighting.gradnorm import GradNorm
from mtrl.weighting.grads import task_gradients
from mtrl.weighting.great import GREAT
from mtrl.weighting.imtl_g import IMTLG, imtl_g, imtl_g_weights
from mtrl.weighting.mgda import MGDA, mgda, min_norm_weights
from mtrl.weighting.nash_mtl import NashMTL, nash_mtl, nash_weights
from mtrl.weighting.pcgrad import PCGrad, pcgrad, pcgrad_weights
from mtrl.weighting.random_weighting import RandomWeighting
from mtrl.weighting.uncertainty import Uncertainty
from mtrl.weighting.upgrad import UPGrad, upgrad, upgrad_weights


def names() -> list[str]:
    """Sorted names of the registered weighting methods."""
    return WEIGHTINGS.names()


def build(name: str, num_tasks: int, **kwargs: object) -> LossWeighting:
    """Build the weighting registered as ``name`` for ``num_tasks`` tasks."""
    return WEIGHTINGS.build(name, num_tasks, **kwargs)


__all__ = [
    "DWA",
    "FAMO",
    "GREAT",
    "IMTLG",
    "MGDA",
    "WEIGHTINGS",
    "CAGrad",
    "Equal",
    "GradNorm",
    "GradReverse",
    "GradientAggregator",
    "GradientReversal",
    "LossWeighting",
    "NashMTL",
    "PCGrad",
    "RandomWeighting",
    "UPGrad",
    "Uncertainty",
    "UnknownNameError",
    "WeightedLoss",
    "build",
    "cagrad",
    "cagrad_weights",
    "grad_reverse",
    "imtl_g",
    "imtl_g_weights",
    "mgda",
    "min_norm_weights",
    "names",
    "nash_mtl",
    "nash_weights",
    "pcgrad",
    "pcgrad_weights",
    "task_gradients",
    "upgrad",
    "upgrad_weights",
]
