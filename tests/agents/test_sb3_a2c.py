"""Our A2C update against Stable-Baselines3's own: same weights, same rollouts, same parameters.

``a2c_multitask`` on one task is plain A2C. Three updates of ours (the runner's collection with
its recorded acting passes, loss, clipping and the fused RMSprop step) must leave the weights SB3's
``A2C.train()`` leaves from the same start on the same rollouts, with the preset's hyperparameters
and torch's RMSprop (SB3's A2C default; the zoo's RMSpropTFLike puts eps inside the square root,
which ours does not, see agents/optim.py). This pins everything but the environment and the
sampling to SB3's reference implementation (bench/sb3_parity.py compares learning).
"""

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from agents.config import load_config
from agents.factory import build_agent
from agents.runner import Runner
from envs.base import MultiTaskVecEnv, StepResult

ROOT = Path(__file__).resolve().parents[2]
OBS, ACTIONS, ENVS = (4, 84, 84), 6, 3


class ScriptedEnv(MultiTaskVecEnv):
    """One task, random frames and rewards in {-1, 0, 1}; an episode ends where ``ends`` says."""

    def __init__(self, ends: set[tuple[int, int]]):
        self.task_names, self.num_envs_per_task = ["scripted"], ENVS
        self.single_observation_space = gym.spaces.Box(0, 255, OBS, np.uint8)
        self.single_action_space = gym.spaces.Discrete(ACTIONS)
        self.rng, self.ends, self.t = np.random.default_rng(0), ends, 0

    def _frames(self) -> np.ndarray:
        return self.rng.integers(0, 256, (ENVS, *OBS), dtype=np.uint8)

    def reset(self, seed: int | None = None) -> np.ndarray:
        return self._frames()

    def step_async(self, actions: np.ndarray, tasks: slice | None = None) -> None:
        assert actions.shape == (ENVS,)

    def step_wait(self, tasks: slice | None = None) -> StepResult:
        obs = self._frames()
        reward = self.rng.integers(-1, 2, ENVS).astype(np.float32)
        term = np.array([(self.t, e) in self.ends for e in range(ENVS)])
        self.t += 1
        return StepResult(obs, reward, term, np.zeros(ENVS, bool), obs.copy())


def sb3_model(cfg, env: MultiTaskVecEnv):
    """SB3's A2C with our preset's hyperparameters, its rollout buffer sized as our rollout."""
    from stable_baselines3 import A2C
    from stable_baselines3.common.buffers import RolloutBuffer
    from stable_baselines3.common.logger import configure

    class Spaces(gym.Env):  # A2C reads the spaces; nothing is stepped
        observation_space = env.single_observation_space
        action_space = env.single_action_space

    a = cfg.agent
    model = A2C(
        "CnnPolicy", Spaces(), n_steps=a.n_steps, learning_rate=a.lr, gamma=a.gamma,
        gae_lambda=a.gae_lambda, ent_coef=a.ent_coef, vf_coef=a.vf_coef,
        max_grad_norm=a.max_grad_norm, rms_prop_eps=a.eps, device="cpu",
    )  # fmt: skip
    model.set_logger(configure(None, []))
    model.rollout_buffer = RolloutBuffer(
        a.n_steps, env.single_observation_space, env.single_action_space, "cpu",
        gamma=a.gamma, gae_lambda=a.gae_lambda, n_envs=ENVS,
    )  # fmt: skip
    return model


def our_weights_as_sb3(net) -> dict[str, torch.Tensor]:
    """Our ActorCritic's parameters under SB3's CnnPolicy names and layouts."""
    enc = net.encoder
    named = {f"features_extractor.cnn.{i}": enc.convs[i] for i in (0, 2, 4)}
    out = {f"{k}.{p}": getattr(m, p) for k, m in named.items() for p in ("weight", "bias")}
    for sb3, ours in (
        ("features_extractor.linear.0", enc.fc),
        ("action_net", net.policy),
        ("value_net", net.value),
    ):
        out[f"{sb3}.weight"] = ours.weight[0].T  # ours is (groups, in, out)
        out[f"{sb3}.bias"] = ours.bias.reshape(-1)
    return out


def fill_sb3_buffer(model, rollout, episode_start: np.ndarray) -> np.ndarray:
    """Our rollout as SB3's buffer (values from SB3's policy); returns the last step's ends."""
    buf, policy = model.rollout_buffer, model.policy
    buf.reset()
    obs = rollout.obs[0]  # (T + 1, E, *obs): s_0..s_T
    done = (rollout.terminated | rollout.truncated)[:, 0].numpy()
    with torch.no_grad():
        for t in range(rollout.num_steps):
            values = policy.predict_values(obs[t]).flatten()
            actions = rollout.actions[t, 0]
            log_prob = policy.evaluate_actions(obs[t], actions)[1]
            buf.add(
                obs[t].numpy(), actions.numpy()[:, None], rollout.rewards[t, 0].numpy(),
                episode_start, values, log_prob,
            )  # fmt: skip
            episode_start = done[t]
        last = policy.predict_values(obs[-1]).flatten()
    buf.compute_returns_and_advantage(last_values=last, dones=done[-1])
    return done[-1]


def test_three_updates_match_sb3_a2c(tmp_path):
    torch.manual_seed(0)
    overrides = [f"env.num_envs_per_task={ENVS}", "agent.rmsprop_init=0", "agent.eps=1e-5"]
    cfg = load_config(ROOT / "configs" / "atari_a2c.yaml", overrides)
    # an episode ends mid-rollout (its return is cut) and at a rollout's last step (no bootstrap)
    env = ScriptedEnv({(1, 0), (4, 1), (7, 2), (9, 0)})
    agent = build_agent(cfg.agent, "atari", OBS, ACTIONS, 1)
    runner = Runner(cfg, env, agent, tmp_path, torch.device("cpu"))
    model = sb3_model(cfg, env)
    ours = our_weights_as_sb3(agent.net)
    with torch.no_grad():
        for name, value in ours.items():
            model.policy.get_parameter(name).copy_(value)
    obs, start, clipped, ended = runner.reset(), np.ones(ENVS, bool), 0, 0
    for _ in range(3):
        obs = runner.collect(obs)
        start = fill_sb3_buffer(model, runner.rollout, start)
        ended += int(runner.rollout.terminated.sum())
        model.train()
        clipped += runner.train_step()["losses/grad_norm"] > cfg.agent.max_grad_norm
        # atol: our first conv runs over 4x4 pixel blocks (agents.depth), rounding otherwise
        # than SB3's; RMSprop's first steps from a zero mean square turn that into up to ~1.5e-6
        # on action_net's weights (a wrong loss term moves them by ~lr = 7e-4)
        for name, value in our_weights_as_sb3(agent.net).items():
            torch.testing.assert_close(
                value, model.policy.get_parameter(name), rtol=1e-4, atol=3e-6, msg=name
            )
    assert clipped > 0  # the clipping path was compared too
    assert ended == 4
