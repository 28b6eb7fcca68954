"""A standalone supervised multi-task trainer (no config system, no RL).

One step: ``losses (T,) = [loss_t(model(x)[t], y_t)]`` -> the architecture's ``penalty()``
backward -> ``weighting.backward(losses, model.shared_parameters(), features=z)`` -> clip ->
``optimizer.step()`` (-> FAMO's ``update`` on the same batch); a step with a non-finite loss or
gradient is skipped, and ``max_nonfinite_steps`` of them in a row raise :class:`DivergenceError`
(as the RL runner's ``max_nonfinite_updates``). Data are either ``(x, targets)``
tensors, batched and shuffled here, or any re-iterable of ``(x, targets)`` batches (e.g. a
``DataLoader``). ``targets`` is a ``(N, T, ...)`` tensor (task t is ``targets[:, t]``) or a
sequence of T tensors ``(N, ...)``.

    trainer = Trainer(model, weighting, optimizer, [F.cross_entropy] * 2,
                      metrics=[{"accuracy": accuracy}] * 2, train_data=(x, y), test_data=(xt, yt),
                      epochs=5, log_dir="runs/x", checkpoint_path="runs/x/last.pt")
    summary = trainer.fit()          # {"test": {task: {"loss": .., "accuracy": ..}}, ...}

tqdm and TensorBoard (``torch.utils.tensorboard``) are imported lazily, only when used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mtrl.architectures.base import MultiTaskModel
from mtrl.batches import Data, iterate_batches, num_batches, split_targets
from mtrl.guard import DivergenceError, NonFiniteGuard, check_parameters
from mtrl.io import save_atomic
from mtrl.metrics import Metric, MetricSums
from mtrl.rng import cuda_rng_states, set_cuda_rng_states
from mtrl.state import state_snapshot
from mtrl.trainer_checks import (
    NoSharedParametersWarning,
    check_sharing,
    resolve_representation,
    whole_number,
)
from mtrl.trainer_log import TrainerLog
from mtrl.weighting.base import (
    GradientAggregator,
    InternalOptimizerMixin,
    LossWeighting,
    WeightedLoss,
)
from mtrl.weighting.grads import loss_device

Loss = Callable[[Tensor, Tensor], Tensor]


__all__ = [
    "DivergenceError",
    "NoSharedParametersWarning",
    "Trainer",
    "save_atomic",
    "split_targets",
]


def _is(method: Any, function: Callable[..., Any]) -> bool:
    """Whether the bound ``method`` is ``function`` itself (not an override, nor a replacement
    set on the instance)."""
    return getattr(method, "__func__", None) is function


class Trainer:
    """Train and evaluate a :class:`MultiTaskModel` with a :class:`LossWeighting` on T tasks.

    ``losses[t](output_t, target_t) -> ()`` and ``metrics[t] = {name: fn}`` (see
    :mod:`mtrl.metrics`; any name but ``"loss"``, the task's loss) are per task.
    ``representation``: ``"auto"`` takes per-task gradients w.r.t. the shared representation z
    (B, D) (MGDA-UB, Sener and Koltun 2018) when the weighting is a gradient method and the
    model ``supports_features``; ``True`` forces it, ``False`` uses the shared parameters.
    Weighting parameters trained by the user's optimiser (uncertainty) are
    added to ``optimizer`` if missing. ``grad_clip`` > 0 clips the total gradient norm.
    ``checkpoint_every``: epochs between checkpoints at ``checkpoint_path`` (the last epoch, and
    one ended by ``fit``'s ``stop``, are always saved); more than 1 for many short epochs.
    ``famo_update``: FAMO (Liu et al. 2023) updates its logits from the loss change of a step;
    ``"same_batch"`` (paper) re-evaluates the batch after the step (one more forward pass),
    ``"next_batch"`` uses the next step's losses instead (no extra forward, noisier signal).
    ``max_nonfinite_steps``: a step whose losses or gradients are not finite is skipped (no
    optimiser step, the weighting's state as before it); that many in a row raise
    :class:`DivergenceError` (0 = never), as does a non-finite parameter before a checkpoint.
    ``run_config``: a plain description of the run (nested dicts, lists, strings and numbers, e.g.
    a resolved config) saved in every checkpoint as ``"config"`` so that a resume can check what it
    continues; training does not read it.
    """

    def __init__(
        self,
        model: MultiTaskModel,
        weighting: LossWeighting,
        optimizer: torch.optim.Optimizer,
        losses: Sequence[Loss],
        metrics: Sequence[Mapping[str, Metric]] | None = None,
        *,
        train_data: Data,
        test_data: Data | None = None,
        task_names: Sequence[str] | None = None,
        epochs: int = 1,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        log_dir: str | Path | None = None,
        checkpoint_path: str | Path | None = None,
        representation: bool | str = "auto",
        famo_update: str = "same_batch",
        grad_clip: float = 0.0,
        log_every: int = 10,
        checkpoint_every: int = 1,
        max_nonfinite_steps: int = 10,
        progress: bool = True,
        seed: int = 0,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.num_tasks = len(losses)
        if model.num_tasks != self.num_tasks or weighting.num_tasks != self.num_tasks:
            raise ValueError(
                f"model ({model.num_tasks}), weighting ({weighting.num_tasks}) and losses "
                f"({self.num_tasks}) disagree on the number of tasks"
            )
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.weighting = weighting.to(self.device)
        self.optimizer = optimizer
        self.losses = list(losses)
        self.metrics = [dict(m) for m in metrics] if metrics else [{} for _ in losses]
        if len(self.metrics) != self.num_tasks:
            raise ValueError(f"expected {self.num_tasks} metric dicts, got {len(self.metrics)}")
        if any("loss" in m for m in self.metrics):  # summed into the loss, which it then was
            raise ValueError("a metric may not be called 'loss': that name is the task's loss")
        self.task_names = list(task_names or [f"task{t}" for t in range(self.num_tasks)])
        if len(self.task_names) != self.num_tasks or len(set(self.task_names)) != self.num_tasks:
            # zip() in the summary and the logs would silently drop or merge tasks
            raise ValueError(
                f"task_names must be {self.num_tasks} distinct names, got {self.task_names}"
            )
        for key, value, low in (
            ("batch_size", batch_size, 1),
            ("log_every", log_every, 1),
            ("checkpoint_every", checkpoint_every, 1),
            ("max_nonfinite_steps", max_nonfinite_steps, 0),
        ):
            if not whole_number(value, low):
                raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
        if not whole_number(epochs, 0):
            raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
        self.train_data, self.test_data = train_data, test_data
        self.epochs, self.batch_size = epochs, batch_size
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.grad_clip, self.log_every, self.progress = grad_clip, log_every, progress
        self.checkpoint_every = checkpoint_every
        self.use_features = resolve_representation(model, weighting, representation)
        if famo_update not in ("same_batch", "next_batch"):
            raise ValueError(
                f"famo_update must be 'same_batch' or 'next_batch', got {famo_update!r}"
            )
        self.famo_update = famo_update
        self.run_config = None if run_config is None else dict(run_config)
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0  # completed epochs
        self.step = 0  # optimiser steps (skipped non-finite ones included)
        self.guard = NonFiniteGuard(max_nonfinite_steps)  # steps skipped as non-finite
        self.log = TrainerLog(self.log_dir, self.task_names)  # TensorBoard, opened lazily
        self._parts: list[Tensor] = []  # the last task_losses() as T scalars
        self._adopt_weighting_parameters()
        adopt_layer = getattr(self.weighting, "adopt_layer", None)  # GradNorm's W
        if callable(adopt_layer) and not self.use_features:
            adopt_layer(self.model.last_shared_layer(), self.model)
        check_sharing(self.model, self.weighting, self.use_features)

    # --- setup --------------------------------------------------------------------------------
    def _adopt_weighting_parameters(self) -> None:
        """Put learnable weighting parameters (e.g. uncertainty's log-variances) in the optimiser,
        unless the method trains them itself (GradNorm, FAMO)."""
        if isinstance(self.weighting, InternalOptimizerMixin):
            return
        owned = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        extra = [p for p in self.weighting.parameters() if p.requires_grad and id(p) not in owned]
        if extra:
            self.optimizer.add_param_group({"params": extra})

    # --- data ---------------------------------------------------------------------------------
    def batches(self, data: Data, shuffle: bool) -> Iterable[tuple[Tensor, list[Tensor]]]:
        """Yield ``(x (B, ...), [y_t (B, ...)] * T)`` on the device from tensors or an iterable."""
        gen = self.generator if shuffle else None
        return iterate_batches(data, self.num_tasks, self.batch_size, self.device, gen)

    # --- one step -----------------------------------------------------------------------------
    def task_losses(
        self, x: Tensor, ys: Sequence[Tensor], features: bool = False
    ) -> tuple[Tensor, list[Tensor], Tensor | None]:
        """``(losses (T,), outputs [T x (B, ...)], z (B, D) or None)`` for one batch."""
        z = None
        if features:
            outs, z = self.model(x, return_features=True)
        else:
            outs = self.model(x)
        self._parts = [fn(o, y) for fn, o, y in zip(self.losses, outs, ys)]
        device = loss_device(self._parts)
        if device is not None:  # a loss fn's CPU constant (e.g. 0 for an empty task) joins them
            self._parts = [p.to(device) for p in self._parts]
        return torch.stack(self._parts), outs, z

    def train_step(self, x: Tensor, ys: Sequence[Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """One optimiser step on a batch; returns ``(losses (T,), weights (T,), outputs)``
        (weights NaN for a step skipped as non-finite)."""
        self.model.train()
        losses, outs, z = self.task_losses(x, ys, self.use_features)
        finite = bool(torch.isfinite(losses.detach()).all())
        update = getattr(self.weighting, "update", None)  # FAMO
        pending = bool(getattr(self.weighting, "has_prev", False))  # a step awaits its update
        if finite and callable(update) and self.famo_update == "next_batch" and pending:
            update(losses.detach())  # this batch's losses stand in for the last one's (no forward)
        self.optimizer.zero_grad(set_to_none=True)
        if not finite:
            weights = torch.full((self.num_tasks,), float("nan"), device=losses.device)
        else:
            saved = state_snapshot(self.weighting)
            # The architecture's penalty first, keeping the graph: it may read this forward's
            # activations (sluice's subspace orthogonality), which the weighting's backward frees.
            # The base class's constant 0 has no gradient: not built at all.
            if not _is(self.model.penalty, MultiTaskModel.penalty):
                penalty = self.model.penalty()
                if penalty.requires_grad:
                    penalty.backward(retain_graph=True)
            # the T scalars, not the stacked vector: per-task gradients then skip the other heads
            weights = self.weighting.backward(self._parts, self._shared_params(), features=z)
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            norm = nn.utils.get_total_norm(grads) if grads else torch.zeros(())
            finite = bool(torch.isfinite(norm))
            if not finite:  # undo what the weighting method learned from this batch
                self.weighting.load_state_dict(saved)
                weights = torch.full_like(weights, float("nan"))  # as documented: not applied
            elif self.grad_clip > 0:
                nn.utils.clip_grads_with_norm_(self.model.parameters(), self.grad_clip, norm)
        if finite:
            self.optimizer.step()
            self.guard.ok()
            if callable(update) and self.famo_update == "same_batch":  # FAMO (paper): same batch
                with torch.no_grad():
                    update(self.task_losses(x, ys)[0])
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.guard.skip(self.step)
        self.step += 1
        return losses.detach(), weights.detach(), [o.detach() for o in outs]

    def _shared_params(self) -> list[nn.Parameter] | None:
        """``model.shared_parameters()`` for the weighting's backward, or None where the method
        in use provably never reads it (a walk over every parameter each step): the base
        backward of a loss weighting, or of a gradient method given the representation z."""
        backward = self.weighting.backward
        if _is(backward, WeightedLoss.backward):
            return None
        if self.use_features and _is(backward, GradientAggregator.backward):
            return None
        return self.model.shared_parameters()

    # --- loops --------------------------------------------------------------------------------
    def train_epoch(self, bar: Any = None) -> dict[str, dict[str, float]]:
        """One pass over the training data; per-task mean loss and metrics (training batches)."""
        sums = MetricSums(self.task_names, self.metrics)
        tick, steps0 = time.perf_counter(), self.step
        for x, ys in self.batches(self.train_data, shuffle=True):
            losses, weights, outs = self.train_step(x, ys)
            sums.add(losses, outs, ys)
            if bar is not None and bar.update(1):  # read the losses only when the bar redraws
                losses_now = dict(zip(self.task_names, losses.tolist(), strict=True))
                bar.set_postfix({n: f"{v:.3g}" for n, v in losses_now.items()}, refresh=False)
            if self.step % self.log_every == 0:
                sps = (self.step - steps0) / max(time.perf_counter() - tick, 1e-9)
                self.log.step(self.step, losses, weights, sps, self.guard.total)
        end = getattr(self.weighting, "epoch_end", None)
        if callable(end):  # DWA
            end()
        self.epoch += 1
        return sums.means()

    @torch.no_grad()
    def evaluate(self, data: Data | None = None) -> dict[str, dict[str, float]]:
        """Per-task mean loss and metrics on ``data`` (default: the test split), eval mode."""
        data = self.test_data if data is None else data
        if data is None:
            raise ValueError("no data to evaluate: pass data or test_data=")
        was_training = self.model.training
        self.model.eval()
        sums = MetricSums(self.task_names, self.metrics)
        try:
            for x, ys in self.batches(data, shuffle=False):
                losses, outs, _ = self.task_losses(x, ys)
                sums.add(losses, outs, ys)
        finally:
            self.model.train(was_training)  # the caller's mode, e.g. for its own loop after fit()
        return sums.means()

    def fit(self, stop: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Train from the current epoch up to ``epochs`` (resumes after :meth:`load`), evaluate,
        checkpoint every ``checkpoint_every`` epochs and after the last; returns ``{"train": ..,
        "test": .., "steps", "epochs", "seconds"}``.

        ``stop`` is asked after each epoch but the last: True ends training there, after that
        epoch's checkpoint (due or not) and without the final test evaluation; the summary then
        has ``"stopped": True``."""
        start, train, stopped = time.perf_counter(), {}, False
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            per_epoch = num_batches(self.train_data, self.batch_size)
            total = None if per_epoch is None else per_epoch * (self.epochs - self.epoch)
            bar = tqdm(total=total, unit="step", dynamic_ncols=True)
        try:
            while self.epoch < self.epochs:
                train = self.train_epoch(bar)
                self.log.metrics(self.step, train, "")
                if self.test_data is not None:
                    self.log.metrics(self.step, self.evaluate(), "test_")
                stopped = stop is not None and self.epoch < self.epochs and stop()
                due = self.epoch % self.checkpoint_every == 0 or self.epoch == self.epochs
                if self.checkpoint_path is not None and (due or stopped):
                    check_parameters(self.model.parameters(), self.step, self.checkpoint_path)
                    self.save(self.checkpoint_path)
                if stopped:
                    break
        finally:
            if bar is not None:
                bar.close()
        if not stopped:
            self.guard.finish()
        summary: dict[str, Any] = {
            "train": train,
            "steps": self.step,
            "epochs": self.epoch,
            "nonfinite_steps": self.guard.total,
        }
        if stopped:
            summary["stopped"] = True
        elif self.test_data is not None:
            summary["test"] = self.evaluate()
        summary["seconds"] = time.perf_counter() - start
        self.log.flush()
        return summary

    def close(self) -> None:
        """Close the TensorBoard writer (if one was opened)."""
        self.log.close()

    # --- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Model, optimiser, weighting, counters, the shuffling generator's state, torch's global
        RNG (dropout, AdaShare's Gumbel samples, a user DataLoader's shuffling), the logged
        scalars' history and ``run_config`` (as ``"config"``, when given)."""
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "weighting": self.weighting.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "nonfinite_steps": self.guard.total,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": cuda_rng_states(self.device),
            "history": self.log.state_dict(),
        }
        if self.run_config is not None:
            state["config"] = self.run_config
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (exactly: training continues bit-identically).
        A saved ``"config"`` is not applied: checking it is the caller's business."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.weighting.load_state_dict(state["weighting"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.guard.total = int(state.get("nonfinite_steps", 0))  # absent in older ones
        self.generator.set_state(state["generator"].cpu())
        if "torch_rng" in state:  # absent in checkpoints from before it was saved
            torch.set_rng_state(state["torch_rng"].cpu())
        set_cuda_rng_states(state.get("cuda_rng") or [], self.device)
        self.log.load_state_dict(state.get("history", {}))  # absent in older checkpoints

    def save(self, path: str | Path | None = None) -> Path:
        """Atomically write :meth:`state_dict` to ``path`` (default ``checkpoint_path``)."""
        path = Path(path or self.checkpoint_path or "checkpoint.pt")
        save_atomic(self.state_dict(), path)
        return path

    def load(self, path: str | Path | None = None) -> None:
        """Load a checkpoint written by :meth:`save` (``torch.load(weights_only=True)``), on any
        device: read to the CPU, where RNG states must stay, then ``load_state_dict`` puts the
        model's, optimiser's and weighting's tensors on theirs."""
        path = Path(path or self.checkpoint_path or "checkpoint.pt")
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
