"""AdaShare (Sun et al. 2020): eval is deterministic argmax; skip policies and penalty by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mtrl.architectures import AdaShare


def _model() -> AdaShare:
    torch.manual_seed(0)
    return AdaShare.mlp(5, [8, 8, 8], [2, 3], tau=1.0)


def test_eval_is_deterministic_and_train_is_stochastic() -> None:
    model = _model()
    with torch.no_grad():
        model.policy_logits[0].copy_(torch.randn(3, 2))
    x = torch.randn(6, 5)
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])
    model.train()
    torch.manual_seed(1)
    samples = {tuple(model.policy(0).tolist()) for _ in range(50)}
    assert len(samples) > 1
    assert all(set(s) <= {0.0, 1.0} for s in samples)  # straight-through: hard in forward


def test_skip_all_blocks_in_eval() -> None:
    model = _model().eval()
    with torch.no_grad():
        model.policy_logits[1].copy_(torch.tensor([[0.0, 1.0]] * 3))  # skip > select
    x = torch.randn(4, 5)
    torch.testing.assert_close(model(x)[1], model.heads[1](model.stem(x)))


def test_eval_reads_each_tasks_block_choices_once(device_traffic) -> None:
    # bool(u[i]) per block and task was one CUDA sync each (T * L per forward)
    model = _model().eval()
    with torch.no_grad():
        model.policy_logits[1].copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    x = torch.randn(4, 5)
    with torch.no_grad(), device_traffic() as traffic:
        outs = model(x)
    assert traffic.total_reads == model.num_tasks
    h = model.stem(x)
    h = model.blocks[2](model.blocks[0](h))  # block 1 skipped
    torch.testing.assert_close(outs[1], model.heads[1](h))


def test_straight_through_gradient_reaches_policy() -> None:
    model = _model().train()
    model(torch.randn(4, 5))[0].sum().backward()
    assert model.policy_logits[0].grad is not None
    assert model.policy_logits[0].grad.abs().sum() > 0


def test_penalty_by_hand() -> None:
    model = AdaShare.mlp(2, [4, 4], [1, 1], sparsity_weight=1.0, sharing_weight=1.0)
    with torch.no_grad():
        model.policy_logits[0].copy_(torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]]))
        model.policy_logits[1].copy_(torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]]))
    # select probabilities: task 0 = (1/2, 3/4), task 1 = (1/4, 1/2)
    sparsity = math.log(0.5) + math.log(0.75) + math.log(0.25) + math.log(0.5)
    sharing = (2 / 2) * 0.25 + (1 / 2) * 0.25
    assert model.penalty().item() == pytest.approx(sparsity + sharing, rel=1e-6)


def test_annealed_temperature_survives_a_checkpoint():
    model = _model()
    model.tau = 0.25
    state = model.state_dict()
    fresh = _model()
    fresh.load_state_dict(state)
    assert fresh.tau == 0.25
    # a checkpoint from before the temperature was saved still loads (keeps the current value)
    old = {k: v for k, v in state.items() if not k.endswith("_extra_state")}
    fresh.tau = 2.0
    fresh.load_state_dict(old)
    assert fresh.tau == 2.0


def test_sharing_penalty_weighs_lower_blocks_more() -> None:
    # L = 3 blocks, select probabilities differ only at block 0 (0.5 vs 0.75): weight (L - 0)/L = 1
    model = AdaShare.mlp(2, [4, 4, 4], [1, 1], sparsity_weight=0.0, sharing_weight=1.0)
    with torch.no_grad():
        model.policy_logits[1][0].copy_(torch.tensor([math.log(3.0), 0.0]))
    probs = torch.tensor([[0.5, 0.5, 0.5], [0.75, 0.5, 0.5]])  # (select, skip) logits (log 3, 0)
    torch.testing.assert_close(model.select_probs().detach(), probs)
    assert model.penalty().item() == pytest.approx(0.25, rel=1e-6)
    with torch.no_grad():  # the same difference at the top block weighs 1/3
        model.policy_logits[1].zero_()
        model.policy_logits[1][2].copy_(torch.tensor([math.log(3.0), 0.0]))
    assert model.penalty().item() == pytest.approx(0.25 / 3, rel=1e-6)


def test_eval_runs_selected_blocks_and_ties_select() -> None:
    # fresh logits are (0, 0): the tie selects every block in eval
    model = _model().eval()
    x = torch.randn(4, 5)
    h = model.stem(x)
    for block in model.blocks:
        h = block(h)
    torch.testing.assert_close(model(x)[0], model.heads[0](h))


def test_soft_samples_follow_the_temperature() -> None:
    # hard=False: u = softmax((logits + gumbel) / tau)[select]; a large tau flattens it to ~0.5
    model = AdaShare.mlp(5, [8, 8, 8], [2], tau=100.0, hard=False).train()
    torch.manual_seed(0)
    u = torch.stack([model.policy(0) for _ in range(20)])
    assert ((u - 0.5).abs() < 0.05).all()


@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_a_temperature_that_is_not_positive_is_refused(tau) -> None:
    # tau = 0 built, then every training step was skipped as non-finite (the sweep)
    with pytest.raises(ValueError, match=rf"tau must be > 0, got {tau}"):
        AdaShare.mlp(5, [8, 8], [2, 3], tau=tau)
