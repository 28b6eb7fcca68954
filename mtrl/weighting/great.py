"""GREAT: Sinha, Chen, Badrinarayanan and Rabinovich 2018, "Gradient Adversarial Training of
Neural Networks" (arXiv:1806.08028), its multi-task form."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F

from mtrl.weighting.base import WEIGHTINGS, InternalOptimizerMixin, LossWeighting


@WEIGHTINGS.register("great")
class GREAT(InternalOptimizerMixin, LossWeighting):
    """Gradient adversarial training: an auxiliary classifier learns which task a gradient came
    from, and the network learns to make the tasks' gradients indistinguishable to it.

    Per sample b and task i the input is ``g_ib = dL_i/dz_b`` (D,), the gradient of task i's
    loss with respect to the shared representation ``z`` (B, D) (``features=``, required). The
    classifier ``C`` (an MLP ``D -> hidden... -> T``) descends ``L_aux = CE(C(g_ib), i)`` averaged
    over the T*B gradients, by its own optimiser (``optimizer``, ``lr``). The network descends
    ``sum_i L_i - lambda_ L_aux``: the reversed auxiliary gradient reaches the network through
    ``g`` itself (a second-order term; the gradients are taken with ``create_graph``), as the
    paper's gradient reversal does. ``lambda_ = 0`` is plain summation.

    The gradients are scaled by B before ``C`` sees them, undoing the batch mean of the losses,
    so their size does not depend on the batch size. Returned weights are ones (T,).
    ``last_accuracy`` is C's accuracy on the last batch (1/T: the tasks are indistinguishable).
    """

    lambda_: Tensor

    needs_features = True  # the Trainer passes features= (representation mode) for it

    def __init__(
        self,
        num_tasks: int,
        feature_dim: int,
        hidden: Sequence[int] = (64,),
        lambda_: float = 1.0,
        lr: float = 1e-3,
        optimizer: str = "adam",
    ) -> None:
        super().__init__(num_tasks)
        if feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {feature_dim}")
        layers: list[nn.Module] = []
        dims = [feature_dim, *hidden]
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], num_tasks))
        self.classifier = nn.Sequential(*layers)
        self.feature_dim = feature_dim
        self.register_buffer("lambda_", torch.tensor(float(lambda_)))
        self._accuracy: Tensor | None = None  # on the device; read when asked for
        self._init_optimizer(list(self.classifier.parameters()), optimizer, lr)

    @property
    def last_accuracy(self) -> float:
        """C's accuracy on the last batch (NaN before the first): read from the device only when
        asked for, not as a sync every step."""
        return float("nan") if self._accuracy is None else float(self._accuracy)

    def backward(
        self,
        losses: Tensor | Sequence[Tensor],
        shared_params: Sequence[Tensor] | None = None,
        *,
        features: Tensor | None = None,
        task_params: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Network: ``sum L_i - lambda L_aux``; then one classifier step. Returns ones (T,)."""
        parts = None if isinstance(losses, Tensor) else list(losses)
        losses = self._check(losses)
        if features is None or features.dim() != 2 or features.shape[1] != self.feature_dim:
            got = "none" if features is None else tuple(features.shape)
            raise ValueError(
                f"GREAT classifies per-sample gradients w.r.t. the shared representation: pass "
                f"features=z of shape (B, {self.feature_dim}) (model(x, return_features=True)); "
                f"got {got}"
            )
        t, b = self.num_tasks, features.shape[0]
        scalars = parts if parts is not None else list(losses.unbind())
        grads = torch.stack(self._task_gradients(scalars, features))  # (T, B, D)
        inputs = (b * grads).reshape(t * b, -1)
        labels = torch.arange(t, device=features.device).repeat_interleave(b)
        # The network's term: C's parameters held fixed, so only the network gets its gradient.
        # In the gradients' dtype: a float64 model works with the default float32 classifier.
        fixed = {k: v.detach().to(inputs.dtype) for k, v in self.classifier.named_parameters()}
        adversarial = F.cross_entropy(functional_call(self.classifier, fixed, (inputs,)), labels)
        lam = self.lambda_.to(losses.dtype)
        (losses.sum() - lam * adversarial).backward()
        # The classifier's step, on the gradients as they were (detached).
        logits = self.classifier(inputs.detach().to(next(self.classifier.parameters()).dtype))
        aux = F.cross_entropy(logits, labels)
        params = list(self.classifier.parameters())
        self._apply_grads(params, torch.autograd.grad(aux, params))
        self._accuracy = (logits.detach().argmax(1) == labels).float().mean()
        return torch.ones_like(losses).detach()

    @staticmethod
    def _task_gradients(scalars: list[Tensor], features: Tensor) -> list[Tensor]:
        """Per-task gradients w.r.t. ``features``; a loss that does not reach them gives zeros."""
        out = []
        for loss in scalars:
            g = None
            if loss.requires_grad:
                g = torch.autograd.grad(loss, features, create_graph=True, allow_unused=True)[0]
            out.append(torch.zeros_like(features) if g is None else g)
        return out
