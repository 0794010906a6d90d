"""Using the laws: values, their evaluation, subset selection and experiments (SPEC §4).

* :mod:`.values` -- :func:`distributional_shapley`, :func:`value_at`,
  :func:`monte_carlo_values`, :func:`values_table` (the ``values.parquet`` content).
* :mod:`.evaluation` -- :func:`evaluate_estimates` against ground truth;
  :func:`law_r2` (the paper's mean per-size R², the pooled R², noise ceilings).
* :mod:`.selection` -- :func:`select_points` ranked at the current dataset size.
* :mod:`.experiments` -- point addition, removal curves, the noisy-label check.
"""

from .evaluation import evaluate_estimates, law_r2, score_pair, split_halves
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
    empirical_psi_se,
    grid_shapley,
    monte_carlo_values,
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
    "empirical_psi_se",
    "evaluate_estimates",
    "flip_labels",
    "grid_shapley",
    "law_r2",
    "monte_carlo_values",
    "noisy_label_check",
    "point_addition_experiment",
    "removal_curve",
    "score_pair",
    "select_points",
    "select_top",
    "split_halves",
    "value_at",
    "value_column",
    "values_table",
]
