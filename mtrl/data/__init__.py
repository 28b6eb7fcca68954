"""Small built-in supervised multi-task benchmarks, generated locally (no downloads).

- :mod:`mtrl.data.gradnorm_toy`: GradNorm's scaled tanh regression tasks (Chen et al. 2018).
- :mod:`mtrl.data.toy2d`: CAGrad's two-objective 2-D toy (Liu et al. 2021).
- :mod:`mtrl.data.digits`: two-digit classification from scikit-learn's 8x8 digits (lazy import).
"""

from mtrl.data.digits import make_two_digits
from mtrl.data.gradnorm_toy import make_gradnorm_toy
from mtrl.data.toy2d import (
    CAGRAD_STARTING_POINTS,
    STARTING_POINTS,
    is_pareto_stationary,
    pareto_front,
    pareto_stationarity,
    toy_loss_bounds,
    toy_losses,
)

__all__ = [
    "CAGRAD_STARTING_POINTS",
    "STARTING_POINTS",
    "is_pareto_stationary",
    "make_gradnorm_toy",
    "make_two_digits",
    "pareto_front",
    "pareto_stationarity",
    "toy_loss_bounds",
    "toy_losses",
]
