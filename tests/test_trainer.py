"""The standalone supervised Trainer: learning, exact checkpoint round-trip, known metrics."""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mtrl
from mtrl.architectures import HardSharing, build_mlp
from mtrl.metrics import accuracy, cross_entropy, mse
from mtrl.trainer import DivergenceError, Trainer, save_atomic, split_targets
from mtrl.weighting import build as build_weighting


def regression_data(n: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n, 4), y (n, 2, 1): two linear targets with different scales."""
    w = torch.randn(2, 4, generator=torch.Generator().manual_seed(99))
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))
    y = torch.stack([x @ w[0], 5 * (x @ w[1])], dim=1).unsqueeze(-1)
    return x, y


def make_trainer(
    weighting: str = "equal", tmp_path=None, epochs: int = 3, seed: int = 0, **kw
) -> Trainer:
    torch.manual_seed(seed)
    model = build_mlp("hard_sharing", 4, [16], [1, 1])
    w = build_weighting(weighting, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = regression_data()
    return Trainer(
        model,
        w,
        opt,
        [F.mse_loss, F.mse_loss],
        [{"mse": mse}, {"mse": mse}],
        train_data=(x, y),
        test_data=regression_data(32, seed=1),
        task_names=["small", "big"],
        epochs=epochs,
        batch_size=16,
        log_dir=None if tmp_path is None else tmp_path / "tb",
        checkpoint_path=None if tmp_path is None else tmp_path / "last.pt",
        progress=False,
        seed=seed,
        **kw,
    )


def test_epoch_metrics_are_read_from_the_device_once_per_epoch_not_per_batch(monkeypatch):
    # each float()/item()/tolist() of a device tensor is a host sync: on CUDA one per task and
    # metric each batch stalled the GPU; the epoch sums now stay on the device until the end
    trainer = make_trainer(epochs=1)
    reads = []

    def counted(real):
        def read(t, *args, **kwargs):
            if "mtrl" in Path(sys._getframe(1).f_code.co_filename).parts:  # not torch.optim's
                reads.append(t.numel())
            return real(t, *args, **kwargs)

        return read

    for name in ("__float__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counted(getattr(torch.Tensor, name)))
    stats = trainer.train_epoch()
    monkeypatch.undo()
    assert trainer.step == 8  # 128 samples in batches of 16
    assert reads == [4]  # loss and mse of two tasks, all at once
    assert set(stats) == {"small", "big"} and all(v["mse"] > 0 for v in stats.values())


def test_a_loss_fn_returning_a_cpu_constant_works_on_a_device():
    # e.g. 0 for a task without samples: torch.stack of the task losses mixed devices on CUDA
    model = build_mlp("hard_sharing", 4, [8], [1, 1]).to("meta")  # meta stands in for CUDA

    def empty(out, target):
        return torch.tensor(0.0)

    trainer = Trainer(
        model,
        build_weighting("equal", 2),
        torch.optim.SGD(model.parameters(), lr=0.1),
        [F.mse_loss, empty],
        train_data=(torch.randn(8, 4), torch.randn(8, 2, 1)),
        device="meta",
        progress=False,
    )
    x, ys = next(iter(trainer.batches(trainer.train_data, shuffle=False)))
    losses, _, _ = trainer.task_losses(x, ys)
    assert losses.shape == (2,) and losses.device.type == "meta"
    assert all(p.device.type == "meta" for p in trainer._parts)


def test_batches_go_to_the_device_without_waiting_for_it(device_traffic):
    # a blocking copy to CUDA synchronises the stream: T + 1 times per batch (meta stands in)
    from mtrl.batches import iterate_batches

    x, y = torch.randn(10, 3), torch.randn(10, 2, 1)
    meta = torch.device("meta")
    gen = torch.Generator().manual_seed(0)
    with device_traffic() as traffic:
        tensors = list(iterate_batches((x, y), 2, 4, meta, gen))
        loader = list(iterate_batches([(x[:4], y[:4]), (x[4:], y[4:])], 2, 4, meta))
    assert traffic.blocking_copies == 0
    assert [b[0].shape[0] for b in tensors] == [4, 4, 2] and len(loader) == 2
    assert all(t.device == meta for b in tensors + loader for t in [b[0], *b[1]])
    cpu = list(iterate_batches((x, y), 2, 4, torch.device("cpu")))  # to the CPU: as it was
    assert cpu[0][0] is not x and torch.equal(cpu[0][0], x[:4])


@pytest.mark.parametrize("weighting", ["equal", "uncertainty", "dwa", "mgda", "famo", "gradnorm"])
def test_loss_decreases(weighting):
    trainer = make_trainer(weighting, epochs=8)
    before = trainer.evaluate()
    summary = trainer.fit()
    after = summary["test"]
    assert summary["steps"] == 8 * 8 and summary["epochs"] == 8
    ratios = [after[t]["loss"] / before[t]["loss"] for t in ("small", "big")]
    assert max(ratios) < 0.85 and sum(ratios) / 2 < 0.6, (weighting, ratios)


def test_famo_next_batch_update_needs_no_extra_forward():
    same = make_trainer("famo", epochs=1)
    nxt = make_trainer("famo", epochs=1, famo_update="next_batch")
    calls = {"same": 0, "next": 0}
    for key, tr in (("same", same), ("next", nxt)):
        forward = tr.model.forward_all

        def counted(x, forward=forward, key=key):
            calls[key] += 1
            return forward(x)

        tr.model.forward_all = counted
        tr.test_data = None  # count training forwards only
        tr.fit()
    assert calls["same"] == 2 * same.step and calls["next"] == nxt.step
    # the logits moved in both modes; next-batch leaves the last step's update pending
    assert not torch.equal(nxt.weighting.logits.detach(), torch.zeros(2))
    assert bool(nxt.weighting.has_prev) and not bool(same.weighting.has_prev)
    with pytest.raises(ValueError, match="famo_update"):
        make_trainer("famo", famo_update="later")


def test_uncertainty_parameters_join_the_optimizer():
    trainer = make_trainer("uncertainty")
    owned = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert id(trainer.weighting.log_vars) in owned
    before = trainer.weighting.log_vars.detach().clone()
    trainer.fit()
    assert not torch.equal(before, trainer.weighting.log_vars.detach())
    # gradnorm trains its weights internally: not added
    g = make_trainer("gradnorm")
    owned = {id(p) for grp in g.optimizer.param_groups for p in grp["params"]}
    assert id(g.weighting.task_weights) not in owned


def test_representation_mode_auto():
    assert make_trainer("mgda").use_features
    assert not make_trainer("equal").use_features
    assert not make_trainer("mgda", representation=False).use_features
    model = build_mlp("soft_sharing", 4, [8], [1, 1])
    with pytest.raises(ValueError, match="one shared representation"):
        Trainer(
            model,
            build_weighting("mgda", 2),
            torch.optim.SGD(model.parameters(), lr=0.1),
            [F.mse_loss] * 2,
            train_data=regression_data(),
            representation=True,
        )


@pytest.mark.parametrize(
    ("weighting", "representation"), [("equal", False), ("mgda", True), ("mgda", False)]
)
def test_a_backward_of_its_own_still_gets_the_shared_parameters(weighting, representation):
    # The Trainer skips model.shared_parameters() (a walk over every parameter each step) only
    # where the library's own backward provably ignores it: a loss weighting's, a gradient
    # method's given z. An override, in a subclass or set on the instance, gets them as before.
    seen = []
    trainer = make_trainer(weighting, epochs=1, representation=representation)
    w = trainer.weighting
    cls = type(w)
    base = cls.backward

    class Own(cls):
        def backward(self, losses, shared_params=None, **kw):
            seen.append(shared_params)
            return base(self, losses, shared_params, **kw)

    w.__class__ = Own
    x, ys = next(iter(trainer.batches(trainer.train_data, shuffle=False)))
    trainer.train_step(x, ys)
    w.__class__ = cls
    w.backward = lambda losses, shared_params=None, **kw: (
        seen.append(shared_params) or base(w, losses, shared_params, **kw)
    )
    trainer.train_step(x, ys)
    expected = trainer.model.shared_parameters()
    assert len(seen) == 2 and all([id(p) for p in got] == [id(p) for p in expected] for got in seen)


@pytest.mark.parametrize(
    ("weighting", "representation", "skips"),
    [
        ("equal", "auto", True),
        ("uncertainty", "auto", True),
        ("pcgrad", "auto", True),  # on z
        ("mgda", "auto", True),
        ("mgda", False, False),  # on the shared parameters: it reads them
    ],
)
def test_skipping_the_unread_shared_parameters_changes_nothing(weighting, representation, skips):
    # The premise of the skip above: the library's backward of a loss weighting, and of a
    # gradient method given z, gives the same gradients with the shared parameters as without
    # (a backward set on the instance turns the skip off).
    skipped = make_trainer(weighting, epochs=2, representation=representation)
    given = make_trainer(weighting, epochs=2, representation=representation)
    w = given.weighting
    base = type(w).backward
    w.backward = lambda *args, **kw: base(w, *args, **kw)  # the same, not recognised as it
    assert given._shared_params() is not None
    assert (skipped._shared_params() is None) == skips
    skipped.fit()
    given.fit()
    for a, b in zip(skipped.model.parameters(), given.model.parameters(), strict=True):
        assert torch.equal(a, b), weighting


def test_great_with_representation_off_says_so():
    # on hard sharing the error said "HardSharing has none" (of a shared representation)
    model = build_mlp("hard_sharing", 4, [16], [1, 1])
    with pytest.raises(ValueError, match="representation=False turns off") as info:
        Trainer(
            model,
            build_weighting("great", 2, feature_dim=16),
            torch.optim.SGD(model.parameters(), lr=0.1),
            [F.mse_loss] * 2,
            train_data=regression_data(),
            representation=False,
        )
    assert "has none" not in str(info.value)


@pytest.mark.parametrize("weighting", ["famo", "dwa", "gradnorm", "pcgrad"])
def test_checkpoint_round_trip_is_exact(tmp_path, weighting):
    # train 2 epochs straight vs 1 epoch, save, load into a fresh trainer, 1 more epoch
    straight = make_trainer(weighting, epochs=2, seed=0)
    if weighting == "pcgrad":
        straight.weighting.load_state_dict(make_trainer(weighting).weighting.state_dict())
    straight.fit()

    first = make_trainer(weighting, tmp_path, epochs=1, seed=0)
    first.fit()
    assert (tmp_path / "last.pt").is_file()
    state = first.state_dict()

    resumed = make_trainer(weighting, epochs=2, seed=123)  # different init and shuffling
    resumed.load(tmp_path / "last.pt")
    for a, b in zip(resumed.model.state_dict().values(), first.model.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed.optimizer.state_dict()["state"].keys() == state["optimizer"]["state"].keys()
    for k, v in first.weighting.state_dict().items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(resumed.weighting.state_dict()[k], v), k
    assert resumed.epoch == 1 and resumed.step == first.step
    resumed.fit()
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values()):
        assert torch.equal(a, b), weighting


def test_checkpoints_every_n_epochs_after_the_last_and_where_a_stop_ends_training(
    tmp_path, monkeypatch
):
    def saving_epochs(trainer: Trainer) -> list[int]:
        saved: list[int] = []
        real = trainer.save

        def save(path=None):
            saved.append(trainer.epoch)
            return real(path)

        monkeypatch.setattr(trainer, "save", save)
        return saved

    trainer = make_trainer("equal", tmp_path / "a", epochs=5, checkpoint_every=2)
    saved = saving_epochs(trainer)
    trainer.fit()
    assert saved == [2, 4, 5]  # every 2nd epoch and the last
    stopped = make_trainer("equal", tmp_path / "b", epochs=5, checkpoint_every=2)
    saved = saving_epochs(stopped)
    assert stopped.fit(stop=lambda: stopped.epoch == 3)["stopped"]
    assert saved == [2, 3]  # epoch 3 was not due: saved because training ends there
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["epoch"] == 3


@pytest.mark.parametrize("weighting", ["pcgrad", "random"])
def test_a_checkpoint_loads_into_a_trainer_on_another_device(tmp_path, weighting):
    """load() reads to the CPU and lets load_state_dict place each tensor: with
    map_location=<the trainer's device> a CUDA trainer got its weighting's generator state on
    the GPU, where a CPU generator refuses it. The meta device stands in for CUDA."""
    first = make_trainer(weighting, tmp_path, epochs=1)
    first.fit()
    model = build_mlp("hard_sharing", 4, [16], [1, 1]).to("meta")  # before its optimiser
    on_device = Trainer(
        model,
        build_weighting(weighting, 2, seed=99),
        torch.optim.Adam(model.parameters(), lr=1e-2),
        [F.mse_loss, F.mse_loss],
        train_data=regression_data(),
        device="meta",
        epochs=2,
    )
    with warnings.catch_warnings():  # meta parameters cannot take the values: a no-op copy
        warnings.filterwarnings("ignore", "for .* copying from a non-meta parameter")
        on_device.load(tmp_path / "last.pt")
    assert on_device.epoch == 1 and on_device.step == first.step
    assert on_device.optimizer.state_dict()["state"][0]["exp_avg"].device.type == "meta"
    assert torch.equal(on_device.generator.get_state(), first.generator.get_state())
    assert torch.equal(
        on_device.weighting.generator.get_state(), first.weighting.generator.get_state()
    )


def test_cuda_rng_states_are_restored_only_for_cuda_runs_on_gpus_that_exist(monkeypatch):
    """A checkpoint from a machine with more GPUs resumed on one with fewer: set_rng_state_all
    failed on the missing index (at once, or lazily at CUDA's initialisation); a CPU run does
    not touch CUDA's generators at all."""
    from mtrl.rng import cuda_rng_states, set_cuda_rng_states

    restored: list[list[torch.Tensor]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("CUDA touched"))
    states = [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]
    set_cuda_rng_states(states, torch.device("cuda"))
    assert len(restored) == 1 and len(restored[0]) == 1 and torch.equal(restored[0][0], states[0])
    trainer = make_trainer("equal", epochs=0)  # on the CPU
    assert cuda_rng_states(trainer.device) == []
    state = trainer.state_dict()
    assert state["cuda_rng"] == []
    trainer.load_state_dict({**state, "cuda_rng": states})
    assert len(restored) == 1


def _adashare_trainer(path, epochs: int, seed: int) -> Trainer:
    torch.manual_seed(seed)
    model = build_mlp("adashare", 4, [16, 16], [1, 1])  # Gumbel samples: torch's global RNG
    return Trainer(
        model,
        build_weighting("equal", 2),
        torch.optim.Adam(model.parameters(), lr=1e-2),
        [F.mse_loss, F.mse_loss],
        train_data=regression_data(),
        epochs=epochs,
        batch_size=16,
        checkpoint_path=None if path is None else path / "last.pt",
        progress=False,
        seed=seed,
    )


def test_checkpoint_round_trip_continues_the_global_rng(tmp_path):
    straight = _adashare_trainer(None, epochs=2, seed=0)
    straight.fit()
    _adashare_trainer(tmp_path, epochs=1, seed=0).fit()
    resumed = _adashare_trainer(None, epochs=2, seed=123)
    resumed.load(tmp_path / "last.pt")
    resumed.fit()
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values()):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)


def test_evaluate_restores_the_model_mode():
    trainer = make_trainer("equal", epochs=1)
    trainer.model.train()
    trainer.evaluate()
    assert trainer.model.training
    trainer.model.eval()
    trainer.evaluate()
    assert not trainer.model.training


def test_tensorboard_keys(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = make_trainer("dwa", tmp_path, epochs=1, log_every=2)
    trainer.fit()
    trainer.close()
    tags = set(EventAccumulator(str(tmp_path / "tb")).Reload().Tags()["scalars"])
    for name in ("small", "big"):
        assert {f"task/{name}/loss", f"weights/{name}", f"task/{name}/mse"} <= tags
        assert {f"task/{name}/test_loss", f"task/{name}/test_mse"} <= tags
    assert {"losses/total", "charts/sps"} <= tags  # the same keys as the RL runner's


class Fixed(HardSharing):
    """Outputs fixed logits regardless of x (for metrics known by hand)."""

    def __init__(self, logits0: torch.Tensor, values1: torch.Tensor) -> None:
        super().__init__(nn.Identity(), [nn.Identity(), nn.Identity()])
        self.bias = nn.Parameter(torch.zeros(()))
        self.logits0, self.values1 = logits0, values1

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        idx = x[:, 0].long()
        return [self.logits0[idx] + self.bias, self.values1[idx] + self.bias]


def test_metrics_by_hand():
    # 4 samples; task 0 classification (predictions 0, 1, 1, 0 vs labels 0, 1, 0, 0 -> 3/4),
    # task 1 regression (errors 1, -1, 2, 0 -> mse 6/4, mae 1).
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [2.0, 0.0]])
    values = torch.tensor([1.0, 1.0, 3.0, 5.0])
    x = torch.arange(4.0).unsqueeze(1)
    y0 = torch.tensor([0, 1, 0, 0])
    y1 = torch.tensor([0.0, 2.0, 1.0, 5.0])
    model = Fixed(logits, values)
    trainer = Trainer(
        model,
        build_weighting("equal", 2),
        torch.optim.SGD(model.parameters(), lr=0.0),
        [cross_entropy, F.mse_loss],
        [{"accuracy": accuracy}, {"mse": mse, "mae": mtrl.metrics.mae}],
        train_data=(x, [y0, y1]),
        batch_size=3,  # uneven batches: means must be weighted by batch size
        progress=False,
    )
    stats = trainer.evaluate((x, [y0, y1]))
    assert stats["task0"]["accuracy"] == pytest.approx(0.75)
    assert stats["task1"]["mse"] == pytest.approx(1.5)
    assert stats["task1"]["loss"] == pytest.approx(1.5)
    assert stats["task1"]["mae"] == pytest.approx(1.0)
    ce = F.cross_entropy(logits, y0).item()
    assert stats["task0"]["loss"] == pytest.approx(ce, rel=1e-6)


def test_epoch_means_are_the_exact_size_weighted_means_in_float64():
    # The sums of a pass are one float64 vector now (losses, then every task's metrics); each
    # entry must stay what its own sum was: 0 + value.to(float64) * n, batch by batch, / N.
    # Uneven batches, and tasks with different metrics (task 1 none).
    trainer = make_trainer(epochs=1)
    trainer.metrics = [{"mse": mse, "mae": mtrl.metrics.mae}, {}]
    trainer.batch_size = 12  # 32 test samples: 12, 12, 8
    stats = trainer.evaluate()
    sums = {("small", "loss"): 0.0, ("small", "mse"): 0.0, ("small", "mae"): 0.0}
    sums[("big", "loss")] = 0.0
    total = 0.0
    with torch.no_grad():
        for x, ys in trainer.batches(trainer.test_data, shuffle=False):
            outs = trainer.model(x)
            n = x.shape[0]
            for t, name in enumerate(("small", "big")):
                loss = F.mse_loss(outs[t], ys[t]).to(torch.float64) * n
                sums[(name, "loss")] = sums[(name, "loss")] + loss
            sums[("small", "mse")] += mse(outs[0], ys[0]).to(torch.float64) * n
            sums[("small", "mae")] += mtrl.metrics.mae(outs[0], ys[0]).to(torch.float64) * n
            total += n
    assert list(stats) == ["small", "big"]
    assert list(stats["small"]) == ["loss", "mse", "mae"] and list(stats["big"]) == ["loss"]
    for (name, key), value in sums.items():
        assert stats[name][key] == float(value) / total, (name, key)  # exactly


def test_a_metric_called_loss_is_refused():
    # its sums were added into the task's loss, which then reported neither
    model = build_mlp("hard_sharing", 4, [8], [1, 1])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    metrics = [{"mse": mse}, {"loss": mse}]
    with pytest.raises(ValueError, match="a metric may not be called 'loss'"):
        Trainer(
            model,
            build_weighting("equal", 2),
            opt,
            [F.mse_loss] * 2,
            metrics,
            train_data=regression_data(8),
        )


def test_iterable_data_and_target_validation():
    x, y = regression_data(32)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    trainer = make_trainer("equal")
    trainer.train_data = batches
    trainer.fit()
    assert trainer.step == 3 * 4
    with pytest.raises(ValueError, match=r"shape \(B, T=3"):
        split_targets(torch.zeros(4, 2), 3)
    with pytest.raises(ValueError, match="expected 3 per-task targets"):
        split_targets([torch.zeros(4)] * 2, 3)


def test_save_atomic_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "ck.pt"
    save_atomic({"a": torch.ones(2)}, path)
    save_atomic({"a": torch.zeros(2)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.zeros(2))
    assert [p.name for p in path.parent.iterdir()] == ["ck.pt"]


def test_trainer_module_imports_no_config_or_rl():
    import subprocess
    import sys

    code = (
        "import sys, mtrl.trainer, mtrl.metrics; "
        "bad = [m for m in ('omegaconf', 'yaml', 'gymnasium', 'agents', 'envs', "
        "'torch.utils.tensorboard') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("weighting", ["equal", "gradnorm"])
def test_sluice_orthogonality_penalty_reaches_the_gradient(weighting):
    # The penalty reads the forward's activations; it used to be backpropagated after the
    # weighting had freed that graph ("backward through the graph a second time").
    torch.manual_seed(0)
    model = build_mlp("sluice", 4, [8, 8], [1, 1], ortho_weight=0.5)
    x, y = regression_data(16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(
        model,
        build_weighting(weighting, 2),
        opt,
        [F.mse_loss] * 2,
        train_data=(x, y),
        batch_size=16,
        progress=False,
    )
    trainer.optimizer.step = lambda: None  # keep the gradients of the first step to compare
    trainer.train_step(x, [y[:, 0], y[:, 1]])
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    outs = model(x)
    losses = [F.mse_loss(o, y[:, t]) for t, o in enumerate(outs)]
    (sum(losses) + model.penalty()).backward()  # GradNorm's first weights are 1: the same sum
    for g, p in zip(got, model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad)
    assert float(model.penalty().detach()) > 0


def test_trainer_hands_gradnorm_the_models_last_shared_layer():
    def first_weights(model, gradnorm) -> torch.Tensor:
        x, y = regression_data(32)
        trainer = Trainer(
            model,
            gradnorm,
            torch.optim.SGD(model.parameters(), lr=0.0),
            [F.mse_loss] * 2,
            train_data=(x, y),
            progress=False,
        )
        trainer.train_step(x, [y[:, 0], y[:, 1]])
        trainer.train_step(x, [y[:, 0], y[:, 1]])
        return gradnorm.task_weights.detach().clone()

    def mmoe() -> nn.Module:
        torch.manual_seed(0)
        return build_mlp("mmoe", 4, [8, 8], [1, 1])

    model = mmoe()
    experts = [e[-2].weight for e in model.experts]  # every expert's last Linear
    assert model.last_shared_layer() == experts
    via_trainer = first_weights(model, build_weighting("gradnorm", 2, optimizer="sgd", lr=0.5))
    model = mmoe()
    explicit = build_weighting(
        "gradnorm",
        2,
        optimizer="sgd",
        lr=0.5,
        last_shared_layer=[e[-2].weight for e in model.experts],
    )
    torch.testing.assert_close(via_trainer, first_weights(model, explicit))
    model = mmoe()  # one expert alone (the old automatic pick) balances differently
    one = build_weighting(
        "gradnorm", 2, optimizer="sgd", lr=0.5, last_shared_layer=model.experts[-1][-2].weight
    )
    assert not torch.allclose(via_trainer, first_weights(model, one))
    # an explicit layer is kept; a hard-sharing trunk's layer is its last weight, not its bias
    model = mmoe()
    explicit = build_weighting("gradnorm", 2, last_shared_layer=model.experts[0][0].weight)
    first_weights(model, explicit)
    assert explicit._layer(None, None) == [model.experts[0][0].weight]
    hard = build_mlp("hard_sharing", 4, [8, 8], [1, 1])
    assert hard.last_shared_layer() == [hard.trunk[-2].weight]


@pytest.mark.parametrize("arch", ["hard_sharing", "mmoe"])
def test_trainer_gradnorm_takes_its_norms_from_the_linear_layers_forward(monkeypatch, arch):
    """The Trainer hands GradNorm the model, whose last shared layers are nn.Linear: the steps
    then form no per-task weight gradients (mtrl.weighting.linear_tap), with the weights the
    plain path gives."""
    import mtrl.weighting.gradnorm as gradnorm_module

    x, y = regression_data(32)

    def weights() -> torch.Tensor:
        torch.manual_seed(0)
        model = build_mlp(arch, 4, [8, 8], [1, 1])
        gradnorm = build_weighting("gradnorm", 2, optimizer="sgd", lr=0.5)
        trainer = Trainer(
            model,
            gradnorm,
            torch.optim.SGD(model.parameters(), lr=0.01),
            [F.mse_loss] * 2,
            train_data=(x, y),
            progress=False,
        )
        for _ in range(3):
            trainer.train_step(x, [y[:, 0], y[:, 1]])
        return gradnorm.task_weights.detach().clone()

    with monkeypatch.context() as patch:  # no linear layers found: the plain path
        patch.setattr(gradnorm_module.LinearTap, "find", classmethod(lambda cls, *a: None))
        plain = weights()

    def refuse(*args, **kwargs):
        raise AssertionError("GradNorm formed the per-task weight gradients")

    monkeypatch.setattr(gradnorm_module, "task_gradients", refuse)
    tapped = weights()
    torch.testing.assert_close(tapped, plain)
    assert not torch.allclose(tapped, torch.ones(2))


def test_fit_stops_after_an_epoch_when_asked(tmp_path):
    trainer = make_trainer("equal", tmp_path, epochs=5)
    summary = trainer.fit(stop=lambda: trainer.epoch >= 2)
    assert summary["stopped"] and summary["epochs"] == 2 and "test" not in summary
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 2  # checkpointed
    trainer.epochs = 3
    summary = trainer.fit(stop=lambda: True)  # asked after the last epoch: the run is complete
    assert summary["epochs"] == 3 and "stopped" not in summary and "test" in summary


def test_run_config_is_saved_in_checkpoints(tmp_path):
    config = {"lr": 0.01, "hidden": [16], "weighting": {"name": "equal", "kwargs": {}}}
    trainer = make_trainer("equal", tmp_path, epochs=1, run_config=config)
    trainer.fit()
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["config"] == config
    plain = make_trainer("equal", epochs=1)
    assert "config" not in plain.state_dict()
    plain.load_state_dict(state)  # the config is only carried, never applied
    assert plain.epoch == 1 and plain.run_config is None


def _step_gradients(grad_clip: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Gradients left by two train_steps on one batch (no parameter update) and the plain ones."""
    trainer = make_trainer("equal", epochs=1, grad_clip=grad_clip)
    trainer.optimizer.step = lambda: None  # keep the parameters and the step's gradients
    x, y = regression_data(16)
    ys = [y[:, 0], y[:, 1]]
    for _ in range(2):
        trainer.train_step(x, ys)
    got = [p.grad.clone() for p in trainer.model.parameters()]
    trainer.model.zero_grad(set_to_none=True)
    sum(F.mse_loss(o, t) for o, t in zip(trainer.model(x), ys, strict=True)).backward()
    return got, [p.grad for p in trainer.model.parameters()]


def test_train_step_starts_from_zero_gradients():
    got, raw = _step_gradients(0.0)  # the second step's gradients replace the first's
    for g, r in zip(got, raw, strict=True):
        torch.testing.assert_close(g, r)


def test_train_step_clips_the_total_gradient_norm():
    got, raw = _step_gradients(0.5)
    norm = torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in raw]))
    assert norm > 0.5  # clipping is active: the gradient is rescaled to total norm 0.5
    for g, r in zip(got, raw, strict=True):
        torch.testing.assert_close(g, r * 0.5 / norm, rtol=1e-4, atol=1e-6)


def test_famo_same_batch_update_uses_the_losses_after_the_step():
    trainer = make_trainer("famo", epochs=1)
    x, y = regression_data(16)
    ys = [y[:, 0], y[:, 1]]
    before, _, _ = trainer.train_step(x, ys)
    with torch.no_grad():
        after = trainer.task_losses(x, ys)[0]
    # FAMO's update at z = (0.5, 0.5): xi = -lr z (delta - z.delta), delta = log(L_before / L_after)
    delta = (before / after).log()
    expected = -0.025 * 0.5 * (delta - delta.mean())
    assert delta.abs().min() > 1e-3
    torch.testing.assert_close(trainer.weighting.logits.detach(), expected)


def test_dwa_epochs_end_with_the_trainers():
    trainer = make_trainer("dwa", epochs=3)
    trainer.fit()
    assert int(trainer.weighting.epochs) == 3
    # from the third epoch on the weights are no longer all 1
    assert not torch.equal(trainer.weighting.current_weights(), torch.ones(2, dtype=torch.float64))


def test_training_batches_are_shuffled_each_epoch():
    trainer = make_trainer("equal", epochs=1)
    x, y = regression_data(32)
    trainer.batch_size = 32

    def order():
        ((xb, _),) = list(trainer.batches((x, y), shuffle=True))
        return [int((x == row).all(1).nonzero()) for row in xb]

    first, second = order(), order()
    assert sorted(first) == list(range(32)) and sorted(second) == list(range(32))
    assert first != list(range(32)) and first != second
    ((xb, _),) = list(trainer.batches((x, y), shuffle=False))  # evaluation keeps the order
    assert torch.equal(xb, x)


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("task_names", ["only"], "task_names must be 2 distinct names"),  # zip dropped task 1
        ("task_names", ["a", "a"], "task_names must be 2 distinct names"),  # merged in the summary
        ("batch_size", 0, "batch_size must be an integer >= 1"),  # was: range() arg 3 ...
        ("batch_size", -1, "batch_size must be an integer >= 1"),  # was: 0 steps, empty metrics
        ("log_every", 0, "log_every must be an integer >= 1"),  # was: ZeroDivisionError
        ("checkpoint_every", 0, "checkpoint_every must be an integer >= 1"),
        ("epochs", -1, "epochs must be an integer >= 0"),
        ("batch_size", True, "batch_size must be an integer >= 1, got True"),  # bool is an int
        ("epochs", True, "epochs must be an integer >= 0, got True"),
    ],
)
def test_bad_trainer_options_raise_one_clear_error(option, value, needle):
    model = build_mlp("hard_sharing", 4, [8], [1, 1])
    kwargs = {"train_data": regression_data(8), "progress": False, option: value}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=needle):
        Trainer(model, build_weighting("equal", 2), opt, [F.mse_loss] * 2, **kwargs)


def test_inputs_and_targets_of_different_lengths_are_refused():
    x, y = regression_data(32)
    trainer = make_trainer("equal")
    # targets longer than x trained silently on the first 24 targets paired with other inputs
    trainer.train_data = (x[:24], y)
    with pytest.raises(
        ValueError, match=r"x has 24 samples but the per-task targets have \[32, 32\]"
    ):
        trainer.fit()
    trainer.train_data = (x, [y[:, 0], y[:20, 1]])  # was: IndexError from inside the loop
    with pytest.raises(ValueError, match=r"per-task targets have \[32, 20\]"):
        trainer.fit()
    assert trainer.step == 0


def test_numpy_data_is_named_as_the_problem():
    x, y = regression_data(8)
    trainer = make_trainer("equal")
    trainer.train_data = (x.numpy(), y.numpy())  # was: "too many values to unpack"
    with pytest.raises(TypeError, match="x is a ndarray"):
        trainer.fit()


class _Switch:
    """A task loss times ``factor``: set it to nan/inf to make chosen steps non-finite."""

    def __init__(self) -> None:
        self.factor = 1.0

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(out, y) * self.factor


def _guarded_trainer(weighting: str, limit: int = 3, **kw) -> tuple[Trainer, _Switch]:
    torch.manual_seed(0)
    switch = _Switch()
    model = build_mlp("hard_sharing", 4, [16], [1, 1])
    trainer = Trainer(
        model,
        build_weighting(weighting, 2),
        torch.optim.Adam(model.parameters(), lr=1e-2),
        [F.mse_loss, switch],
        train_data=regression_data(),
        batch_size=16,
        progress=False,
        max_nonfinite_steps=limit,
        **kw,
    )
    return trainer, switch


def _snapshot(trainer: Trainer) -> list[torch.Tensor]:
    w = trainer.weighting.state_dict()
    tensors = [v for v in w.values() if isinstance(v, torch.Tensor)]
    return [p.detach().clone() for p in trainer.model.parameters()] + [t.clone() for t in tensors]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("weighting", ["gradnorm", "uncertainty", "pcgrad"])
def test_a_non_finite_loss_skips_the_step_and_leaves_every_state_alone(weighting, bad):
    trainer, switch = _guarded_trainer(weighting)
    x, ys = next(iter(trainer.batches(trainer.train_data, shuffle=False)))
    trainer.train_step(x, ys)  # a normal first step: GradNorm records L(0), Adam has state
    before, opt_before = _snapshot(trainer), repr(trainer.optimizer.state_dict())
    switch.factor = bad
    with pytest.warns(RuntimeWarning, match="non-finite loss or gradient at step 1"):
        losses, weights, _ = trainer.train_step(x, ys)
    assert not torch.isfinite(losses[1]) and torch.isnan(weights).all()
    assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(trainer), strict=True))
    assert repr(trainer.optimizer.state_dict()) == opt_before
    assert trainer.step == 2 and trainer.guard.total == 1 and trainer.guard.streak == 1
    switch.factor = 1.0
    trainer.train_step(x, ys)  # finite again: a real step, and the streak ends
    assert not torch.equal(before[0], next(trainer.model.parameters()))
    assert trainer.guard.streak == 0 and trainer.guard.total == 1


@pytest.mark.parametrize("weighting", ["gradnorm", "pcgrad", "random"])
def test_a_non_finite_gradient_restores_the_weighting_state(weighting, same_state):
    # Finite losses, an infinite gradient (a hook on the head's output): the weighting has
    # already learned from the batch (GradNorm its weights and its Adam state, PCGrad and RLW
    # drew from their generators, in the extra state); all of it must be undone. The state is
    # snapshotted by cheap clones now (mtrl.state.state_snapshot), not copy.deepcopy.
    trainer, _ = _guarded_trainer(weighting)
    x, ys = next(iter(trainer.batches(trainer.train_data, shuffle=False)))
    trainer.train_step(x, ys)
    before = _snapshot(trainer)
    state = copy.deepcopy(trainer.weighting.state_dict())
    head = trainer.model.task_parameters(1)[0]
    handle = head.register_hook(lambda g: g * float("inf"))
    with pytest.warns(RuntimeWarning):
        _, weights, _ = trainer.train_step(x, ys)
    handle.remove()
    assert torch.isnan(weights).all()  # not applied: NaN, as for a non-finite loss
    assert all(p.grad is None for p in trainer.model.parameters())  # no non-finite .grad left
    assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(trainer), strict=True))
    assert same_state(trainer.weighting.state_dict(), state)
    assert trainer.guard.total == 1
    trainer.train_step(x, ys)  # the same step, finite: it does change the state (not vacuous)
    assert not same_state(trainer.weighting.state_dict(), state)


def test_state_snapshot_copies_like_deepcopy(same_state):
    from mtrl.state import state_snapshot

    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.arange(3.0))
            self.register_buffer("count", torch.zeros((), dtype=torch.long))
            self.shared = torch.ones(2)
            self.extra = {"pair": (self.shared, [self.shared, 7]), "name": "x", "obj": {1: 2.5}}

        def get_extra_state(self):
            return self.extra

        def set_extra_state(self, state):
            self.extra = state

    m = Holder()
    saved, reference = state_snapshot(m), copy.deepcopy(m.state_dict())
    assert same_state(saved, reference)
    assert saved._metadata == reference._metadata  # module versions, for load_state_dict
    pair = saved["_extra_state"]["pair"]
    assert pair[0] is pair[1][0] and pair[0] is not m.shared  # one clone per tensor, as deepcopy
    assert saved["_extra_state"]["obj"] is not m.extra["obj"]  # other objects deep-copied
    with torch.no_grad():  # the live state moves on; the snapshot does not
        m.w.add_(1.0)
        m.count.add_(1)
        m.shared.add_(1.0)
    m.extra["obj"][1] = 0.0
    assert same_state(saved, reference)
    m.load_state_dict(saved)
    assert torch.equal(m.w, torch.arange(3.0)) and int(m.count) == 0
    assert m.extra["obj"] == {1: 2.5} and torch.equal(m.extra["pair"][0], torch.ones(2))


@pytest.mark.parametrize("limit", [1, 3])
def test_non_finite_steps_in_a_row_stop_training(limit):
    trainer, switch = _guarded_trainer("equal", limit=limit)
    switch.factor = float("nan")
    needle = f"{limit} steps in a row had a non-finite loss"
    with pytest.raises(DivergenceError, match=needle), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit()
    assert trainer.guard.total == limit and trainer.step == limit - 1  # the last one raised


def test_max_nonfinite_steps_zero_never_stops():
    trainer, switch = _guarded_trainer("equal", limit=0)
    switch.factor = float("nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = trainer.fit()
    assert summary["steps"] == 8 and summary["nonfinite_steps"] == 8
    # one warning per streak, not per step, and one that training ended inside it
    assert [str(w.message).split(";")[0] for w in caught] == [
        "non-finite loss or gradient at step 0",
        "training ended with its last 8 steps skipped as non-finite",
    ]


def test_training_that_ends_inside_a_streak_says_so():
    # the last 3 of 8 steps non-finite, below the limit (5): fit() returns, with a warning
    trainer, switch = _guarded_trainer("equal", limit=5)
    steps = []

    def train_step(x, ys, _orig=trainer.train_step):
        steps.append(trainer.step)
        switch.factor = float("nan") if trainer.step >= 5 else 1.0
        return _orig(x, ys)

    trainer.train_step = train_step
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = trainer.fit()
    assert steps == list(range(8)) and summary["nonfinite_steps"] == 3
    assert [str(w.message) for w in caught][-1] == (
        "training ended with its last 3 steps skipped as non-finite; the parameters are those "
        "from before them (lower the learning rate or set grad_clip)"
    )
    switch.factor = 1.0


def test_non_finite_parameters_are_never_checkpointed(tmp_path):
    trainer, _ = _guarded_trainer("equal", epochs=2, checkpoint_path=tmp_path / "last.pt")
    trainer.fit()  # two good epochs: a checkpoint at step 16
    good = (tmp_path / "last.pt").read_bytes()
    trainer.epochs = 3
    param = next(trainer.model.parameters())

    def overflow(*_: object) -> None:  # a finite step can still overflow a parameter
        if trainer.step == 23:  # the epoch's last step, so no later loss sees it
            with torch.no_grad():
                param[0, 0] = float("inf")

    trainer.optimizer.register_step_post_hook(overflow)
    with pytest.raises(DivergenceError, match="parameters became non-finite by step 24"):
        trainer.fit()
    assert (tmp_path / "last.pt").read_bytes() == good


def test_skipped_steps_survive_a_checkpoint_round_trip(tmp_path):
    trainer, switch = _guarded_trainer("equal", limit=0)
    switch.factor = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit()
    trainer.save(tmp_path / "c.pt")
    fresh, _ = _guarded_trainer("equal", limit=0)
    fresh.load(tmp_path / "c.pt")
    assert fresh.guard.total == 8 and fresh.step == 8


def _soft_sharing_trainer(weighting: str) -> Trainer:
    model = build_mlp("soft_sharing", 4, [16], [1, 1])
    x, y = regression_data()
    return Trainer(
        model,
        build_weighting(weighting, 2),
        torch.optim.Adam(model.parameters(), lr=1e-2),
        [F.mse_loss, F.mse_loss],
        train_data=(x, y),
        progress=False,
    )


def test_gradnorm_on_a_model_without_shared_parameters_fails_when_built():
    # it failed at the first step's backward, a traceback mid-run (soft sharing shares nothing)
    with pytest.raises(ValueError, match="GradNorm balances gradient norms on a shared layer and "):
        _soft_sharing_trainer("gradnorm")


def test_a_gradient_method_with_nothing_shared_warns_that_it_is_equal_weighting():
    from mtrl.trainer import NoSharedParametersWarning

    with pytest.warns(
        NoSharedParametersWarning, match="MGDA combines the tasks' gradients"
    ) as seen:
        trainer = _soft_sharing_trainer("mgda")
    assert seen[0].filename == __file__  # points at the line that built the Trainer
    trainer.fit()  # and trains: each column with its own task's gradient
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a loss weighting or shared parameters: no warning
        _soft_sharing_trainer("uncertainty")
        make_trainer("mgda")


def test_a_non_finite_loss_keeps_famos_pending_next_batch_update():
    # famo_update="next_batch": a step's FAMO update waits for the next batch's losses; a
    # non-finite batch is skipped without consuming it (its NaN losses measure nothing)
    trainer, switch = _guarded_trainer("famo", famo_update="next_batch")
    x, ys = next(iter(trainer.batches(trainer.train_data, shuffle=False)))
    trainer.train_step(x, ys)
    before = _snapshot(trainer)
    switch.factor = float("nan")
    with pytest.warns(RuntimeWarning, match="non-finite loss or gradient at step 1"):
        trainer.train_step(x, ys)
    assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(trainer), strict=True))
    assert bool(trainer.weighting.has_prev)  # still pending
    switch.factor = 1.0
    trainer.train_step(x, ys)  # a finite batch: its losses complete the pending update
    assert not torch.equal(trainer.weighting.logits.detach(), torch.zeros(2))


def test_a_stopped_run_inside_a_streak_does_not_say_training_ended():
    # stop() ends a run that will be resumed: its streak goes on after the resume, so the
    # "training ended inside a streak" warning is for a run that reached its last epoch
    trainer, switch = _guarded_trainer("equal", limit=0, epochs=2)
    switch.factor = float("nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = trainer.fit(stop=lambda: True)
    assert summary["stopped"] and summary["nonfinite_steps"] == 8
    assert [str(w.message) for w in caught] == [
        "non-finite loss or gradient at step 0; step skipped (1 so far)"
    ]


def test_gradnorm_in_representation_mode_is_not_handed_the_last_shared_layer():
    # with representation=True GradNorm balances the gradients of z: the Trainer hands it the
    # model's last shared layer in parameter mode only (a given layer would take precedence)
    trainer = make_trainer("gradnorm", representation=True)
    assert trainer.use_features and trainer.weighting.layer is None
    params = make_trainer("gradnorm")
    (layer,) = params.weighting.layer
    assert layer is params.model.last_shared_layer()[0]


def test_trainer_log_writes_the_runner_keys_with_their_values(tmp_path, writer):
    from mtrl.trainer_log import TrainerLog

    log = TrainerLog(tmp_path, ["a", "b"])
    log._writer = writer
    log.step(7, torch.tensor([1.0, 3.0]), torch.tensor([0.25, 0.75]), 12.5, 2)
    log.metrics(8, {"a": {"loss": 1.0, "mse": 2.0}, "b": {"loss": 3.0}}, "")
    log.metrics(8, {"a": {"loss": 4.0}}, "test_")
    assert writer.scalars == [
        ("task/a/loss", 1.0, 7),
        ("weights/a", 0.25, 7),
        ("task/b/loss", 3.0, 7),
        ("weights/b", 0.75, 7),
        ("losses/total", 4.0, 7),
        ("charts/sps", 12.5, 7),
        ("charts/nonfinite_steps", 2, 7),
        ("task/a/mse", 2.0, 8),  # the training loss is logged per step, not again per epoch
        ("task/a/test_loss", 4.0, 8),
    ]
    log.close()
    assert writer.closed
    reopened = log.writer  # a later scalar opens a new writer
    assert reopened is not writer
    log.close()
    assert TrainerLog(None, ["a"]).writer is None  # no log_dir: nothing at all


def test_non_finite_guard_warns_at_the_end_only_inside_a_streak():
    from mtrl.guard import NonFiniteGuard

    guard = NonFiniteGuard(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guard.finish()  # no skipped step: nothing to say
        with pytest.warns(RuntimeWarning, match="step 4; step skipped"):
            guard.skip(4)
        guard.ok()
        guard.finish()  # the streak ended with a real step
    assert guard.total == 1 and guard.streak == 0


def test_check_parameters_names_the_checkpoint_only_if_it_exists(tmp_path):
    from mtrl.guard import check_parameters

    bad = [torch.ones(2), torch.tensor([1.0, float("inf")])]
    path = tmp_path / "last.pt"
    check_parameters(bad[:1], 3, path)  # finite: nothing
    with pytest.raises(DivergenceError, match=r"by step 3 \(lower the .*\); no checkpoint$"):
        check_parameters(bad, 3, path)
    path.write_bytes(b"x")
    with pytest.raises(DivergenceError, match=f"last good checkpoint kept at {path}$"):
        check_parameters(bad, 3, path)


def test_split_targets_and_num_batches():
    from mtrl.batches import num_batches

    with pytest.raises(ValueError, match=r"shape \(B, T=2, \.\.\.\), got \(8,\)"):
        split_targets(torch.zeros(8), 2)  # one target per sample, no task axis
    x, y = regression_data(10)
    assert num_batches((x, y), 4) == 3  # the last batch is partial
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    assert num_batches(batches, 4) == 2  # an iterable's own length
    assert num_batches(iter(batches), 4) is None  # unknown


class _ConstantPenalty(HardSharing):
    """A hard-sharing MLP whose penalty is a constant (e.g. a coupling switched off)."""

    def penalty(self) -> torch.Tensor:
        return torch.tensor(0.5)


def test_a_constant_penalty_is_not_backpropagated():
    # only a penalty with a graph is backpropagated: a constant one has nothing to reach
    torch.manual_seed(0)
    model = _ConstantPenalty(nn.Linear(4, 8), [nn.Linear(8, 1), nn.Linear(8, 1)])
    trainer = Trainer(
        model,
        build_weighting("equal", 2),
        torch.optim.SGD(model.parameters(), lr=0.1),
        [F.mse_loss] * 2,
        train_data=regression_data(16),
        progress=False,
    )
    x, ys = next(iter(trainer.batches(trainer.train_data, shuffle=False)))
    losses, weights, _ = trainer.train_step(x, ys)
    assert torch.isfinite(losses).all() and torch.equal(weights, torch.ones(2))
    assert trainer.guard.total == 0
