"""mtrl: supervised multi-task learning components (architectures, loss/gradient weighting,
regularisers, task relations, scheduling, distillation) that depend only on torch and numpy.

The RL agents in ``agents/`` reuse these pieces; nothing here imports gymnasium or the agents.
"""

__version__ = "0.1.0"
