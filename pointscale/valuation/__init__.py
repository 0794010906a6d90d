"""Using the laws: values, their evaluation, subset selection and experiments (SPEC §4).

* :mod:`.values` -- :func:`distributional_shapley`, :func:`value_at`,
  :func:`monte_carlo_values`, :func:`values_table` (the ``values.parquet`` content).
* :mod:`.evaluation` -- :func:`evaluate_estimates` against ground truth.
* :mod:`.selection` -- :func:`select_points` ranked at the current dataset size.
* :mod:`.experiments` -- point addition, removal curves, the noisy-label check.
"""

from .evaluation import evaluate_estimates, score_pair
from .experiments import (
    PointAdditionResult,
    flip_labels,
    noisy_label_check,
    point_addition_experiment,
    removal_curve,
)
from .selection import select_points, select_top
from .values import (
    SizeValues,
    ValueEstimate,
    distributional_shapley,
    empirical_psi,
    grid_shapley,
    monte_carlo_values,
    power_mean,
    value_at,
    value_column,
    values_table,
)

__all__ = [
    "PointAdditionResult",
    "SizeValues",
    "ValueEstimate",
    "distributional_shapley",
    "empirical_psi",
    "evaluate_estimates",
    "flip_labels",
    "grid_shapley",
    "monte_carlo_values",
    "noisy_label_check",
    "point_addition_experiment",
    "power_mean",
    "removal_curve",
    "score_pair",
    "select_points",
    "select_top",
    "value_at",
    "value_column",
    "values_table",
]
