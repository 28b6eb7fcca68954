"""GradNorm: Chen et al. 2018, "GradNorm: Gradient Normalization for Adaptive Loss Balancing in
Deep Multitask Networks" (ICML, arXiv:1711.02257)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mtrl.weighting.base import WEIGHTINGS, InternalOptimizerMixin, LossWeighting
from mtrl.weighting.grads import last_weight, task_gradients
from mtrl.weighting.linear_tap import LinearTap
from mtrl.weighting.numerics import row_norms


@WEIGHTINGS.register("gradnorm")
class GradNorm(InternalOptimizerMixin, LossWeighting):
    """Learned weights ``w`` (T,): ``total = sum_i w_i L_i``, ``w`` trained on
    ``L_grad = sum_i |G_i - mean(G) r_i^alpha|``, ``G_i = |d(w_i L_i)/dW|``,
    ``r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0))``; the target is a constant (paper, Eq. 2).

    ``W`` is ``last_shared_layer`` (a tensor or list of tensors, e.g. the last trunk layer's
    weight as in the paper; :class:`~mtrl.trainer.Trainer` passes the model's
    ``last_shared_layer()`` through :meth:`adopt_layer`), else ``features`` when given (norms
    w.r.t. the shared representation: the cheaper departure from the paper), else the last
    weight in ``shared_params`` (:func:`~mtrl.weighting.grads.last_weight`: not a bias). Each
    step takes T per-task gradients of ``W`` (an outer product over the batch each), which
    dominates on a wide layer, unless ``W`` belongs to ``nn.Linear`` layers of a model handed to
    :meth:`adopt_layer` (as the Trainer does): then the T backward passes stop at the layers'
    outputs and the norms come from them (:mod:`~mtrl.weighting.linear_tap`; same values up
    to rounding; 3.3x faster at T = 40 on a 1024-wide layer, 1.4x on a 256-wide one).
    ``L_i(0)`` are the losses of the first call. ``w`` is updated by an internal optimiser
    (``optimizer`` 'adam' or 'sgd', ``lr``) after the model gradients are written, then clamped
    positive and renormalised to sum T; keep it out of the model's optimiser.
    """

    initial_losses: Tensor
    initialized: Tensor

    def __init__(
        self,
        num_tasks: int,
        alpha: float = 1.5,
        lr: float = 0.025,
        optimizer: str = "adam",
        last_shared_layer: Tensor | Sequence[Tensor] | None = None,
    ) -> None:
        super().__init__(num_tasks)
        self.alpha = alpha
        self.task_weights = torch.nn.Parameter(torch.ones(num_tasks))
        self.register_buffer("initial_losses", torch.ones(num_tasks))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        if isinstance(last_shared_layer, Tensor):
            last_shared_layer = [last_shared_layer]
        # A plain list: not registered, so the model's parameters stay out of our state_dict.
        self._last_shared = None if last_shared_layer is None else list(last_shared_layer)
        self._tap: LinearTap | None = None  # hooks on W's linear layers, once a model is given
        self._init_optimizer([self.task_weights], optimizer, lr)

    def adopt_layer(self, layer: Sequence[Tensor], model: torch.nn.Module | None = None) -> None:
        """Use ``layer`` as ``W`` unless ``last_shared_layer`` was given (an empty ``layer``
        changes nothing): how a trainer hands over its model's declared last shared layer.

        With ``model``, if every tensor of ``W`` is the weight or bias of one of its ``nn.Linear``
        layers, forward hooks on those layers keep their inputs and outputs, from which the norms
        are computed without forming the T weight gradients (same values up to rounding; a step
        whose forward the hooks could not use, e.g. a layer called twice, takes the plain path).
        """
        if self._last_shared is None and layer:
            self._last_shared = list(layer)
        if model is not None and self._last_shared is not None:
            if self._tap is not None:
                self._tap.remove()
            self._tap = LinearTap.find(model, self._last_shared)

    @property
    def layer(self) -> list[Tensor] | None:
        """The weight ``W`` whose per-task gradient norms are balanced, once given or adopted;
        None until then (each step then takes the last weight of its ``shared_params``)."""
        return self._last_shared

    def _layer(
        self, shared_params: Sequence[Tensor] | None, features: Tensor | None
    ) -> list[Tensor]:
        if self._last_shared is not None:
            return self._last_shared
        if features is not None:
            return [features]
        layer = last_weight(shared_params or [])
        if layer:
            return layer
        raise ValueError(
            "GradNorm needs last_shared_layer, non-empty shared_params or features= (the layer "
            "whose gradient norms it balances)"
        )

    def backward(
        self,
        losses: Tensor | Sequence[Tensor],
        shared_params: Sequence[Tensor] | None = None,
        *,
        features: Tensor | None = None,
        task_params: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Backward ``sum w_i L_i`` into all parameters, then update ``w``; returns ``w`` (T,)."""
        parts = None if isinstance(losses, Tensor) else list(losses)  # scalars: see task_gradients
        losses = self._check(losses)
        layer = self._layer(shared_params, features)
        # row_norms: .norm(dim=1) overflowed to inf for float32 gradients of norm > ~1e19 (losses
        # of ~1e19), which made the weights NaN for good (the step itself was still finite)
        norms = self._tapped_norms(losses if parts is None else parts, layer)
        if norms is None:
            norms = row_norms(task_gradients(losses if parts is None else parts, layer))
        detached = losses.detach()
        # L_i(0) from the first call, selected on the device (bool() of the flag in a branch was
        # a host sync every step on CUDA)
        first = detached.to(self.initial_losses.device)
        self.initial_losses.copy_(torch.where(self.initialized, self.initial_losses, first))
        self.initialized.fill_(True)
        w = self.task_weights.detach().to(losses.dtype).clone()
        (w * losses).sum().backward()

        ratio = detached / self.initial_losses.to(detached).clamp_min(1e-12)
        r = ratio / ratio.mean().clamp_min(1e-12)
        norms = norms.to(self.task_weights.dtype)
        target = ((w.to(norms) * norms).mean() * r.to(norms) ** self.alpha).detach()
        with torch.enable_grad():
            l_grad = (self.task_weights * norms - target).abs().sum()
            grad = torch.autograd.grad(l_grad, self.task_weights)[0]
        # A step with no finite gradient for w (w_i G_i or the target beyond the dtype's range)
        # steps on zeros: the weights never become NaN from finite losses (they did, and stayed
        # NaN, while this step's own gradients were finite). Selected on the device: no sync.
        grad = torch.where(torch.isfinite(grad).all(), grad, torch.zeros_like(grad))
        self._apply_grad(self.task_weights, grad)
        with torch.no_grad():
            self.task_weights.clamp_(min=1e-6)
            self.task_weights.mul_(self.num_tasks / self.task_weights.sum())
        return w

    def _tapped_norms(self, losses: Tensor | list[Tensor], layer: list[Tensor]) -> Tensor | None:
        """The norms from the linear layers' recorded forward (None: take the plain path); the
        record is cleared either way, so the next step uses only its own forward."""
        tap = self._tap
        if tap is None:
            return None
        try:
            if layer is not self._last_shared:
                return None
            return tap.norms(list(losses.unbind()) if isinstance(losses, Tensor) else losses)
        finally:
            tap.clear()
