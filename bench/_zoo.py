"""The rl-baselines3-zoo's A2C hyperparameters for Atari, shared by the benches that run SB3's A2C
(bench/sb3_parity.py for learning, bench/throughput.py for speed), so both run the same agent.
The zoo's optimiser is RMSpropTFLike with this eps; each bench says which optimiser it uses."""

from __future__ import annotations

from typing import Any

#: A2C's keyword arguments in the zoo's ``a2c.yml`` (atari): n-step 5, lr 7e-4, the coefficients
ZOO_A2C: dict[str, Any] = {"n_steps": 5, "learning_rate": 7e-4, "ent_coef": 0.01, "vf_coef": 0.25}
#: the zoo's ``optimizer_kwargs`` eps (of RMSpropTFLike, inside its square root)
ZOO_RMSPROP_EPS = 1e-5
