"""Utilities U(D): the score on the validation split of a model trained on D.

Higher is better for every metric (SPEC §1):

* ``neg_log_loss`` (validation-specific; see below):
  ``mean_i log p_i[y_i]`` with ``p`` clipped below at machine epsilon. The
  probability columns are laid out over *all* classes ``0..n_classes-1``, so a
  model trained on a subset that lacks a class still scores (that class gets
  probability 0 from the model, clipped).
* ``accuracy``: fraction of validation rows predicted correctly.
* ``neg_mse`` (regression default): ``-mean (y - ŷ)²``.
* ``paper_ce`` (classification default): ``-cross_entropy(softmax(p), y) = mean_i log_softmax(p_i)[y_i]``,
  the paper code's score (log-softmax applied to probabilities a second
  time). Bounded (each row's term lies in [−log(e+C−1), 1 − log(e+C−1)])
  and smooth; it squashes Δ.
* ``neg_brier``: ``-mean_i Σ_c (p_ic − 1[y_i = c])²``, the negative Brier
  score (a proper scoring rule, bounded in [−2, 0], smooth).
* ``sklearn:NAME`` for every ``NAME`` in ``sklearn.metrics.get_scorer_names()``:
  scikit-learn's scorer, called as ``scorer(model, X_val, y_val)`` (already
  "higher is better"). Its task comes from where its score function lives
  (``sklearn.metrics._regression`` scores regressions, everything else class
  labels or probabilities); :func:`check_metric_on` also tries it on a
  constant model over the validation split, so a scorer that cannot score
  the data (``f1`` on three classes, a deviance on negative targets) stops
  before any compute. Class labels are the codes ``0..n_classes-1`` (the
  sorted classes), so a binary scorer's positive class is the second one.

Which one is the classification default is a measured choice
(``benchmarks/utility.py``, README "Which utility"): values must *transfer*,
i.e. per-point values computed from the same fits against the validation
split and against the held-out test split must agree. ``neg_log_loss`` is
unbounded: a few confidently wrong validation rows dominate Δ, so its values
describe those rows more than the point (on Adult, validation→test Spearman
0.13 against 0.48 for ``paper_ce`` in an audit). It stays available,
documented as validation-specific, never the default. Measured by
``benchmarks/utility.py`` (logistic regression, 1,000 points × 30 samples,
k uniform in [100, 1000], validation→test Spearman of per-point values from
the same fits): adult ``paper_ce`` 0.59, ``neg_brier`` 0.24,
``neg_log_loss`` 0.20; magic 0.73, 0.48 and 0.46. ``paper_ce``
transfers best on both, so it is the default.

The probability metrics are written for stacked inputs (``proba`` of shape
``(..., n, n_classes)``), so the batched fast path scores a whole block of
models in one call with exactly the arithmetic :func:`utility` uses for a
single fitted estimator.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ConfigError

_EPS = np.finfo(np.float64).eps


def _pick(values: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``values[..., i, y_i]`` for ``values`` of shape ``(..., n, C)``."""
    idx = np.broadcast_to(np.asarray(y, dtype=np.intp)[:, None], values.shape[:-1] + (1,))
    return np.take_along_axis(values, idx, axis=-1)[..., 0]


def neg_log_loss_from_proba(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``mean log p[y]`` over the second-to-last axis; ``proba`` is ``(..., n, C)``."""
    p_true = _pick(proba, y)
    return np.log(np.clip(p_true, _EPS, 1.0)).mean(axis=-1)


def accuracy_from_proba(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Accuracy of ``argmax`` predictions (ties go to the lower class, as scikit-learn's)."""
    return (np.argmax(proba, axis=-1) == np.asarray(y)).mean(axis=-1)


def paper_ce_from_proba(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``mean log_softmax(p)[y]``: the paper code's cross-entropy of probabilities."""
    shifted = proba - proba.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return _pick(log_softmax, y).mean(axis=-1)


def paper_ce_from_p1(p1: np.ndarray, y: np.ndarray) -> np.ndarray:
    """:func:`paper_ce_from_proba` of binary probabilities ``[1 − p1, p1]``, from ``p1`` alone.

    With two classes, ``log_softmax([1 − p, p])[y] = −log1p(exp(±(1 − 2p)))``
    (+ for y = 1, − for y = 0): one exp and one log1p per row instead of a
    stacked softmax (the batched solvers score tens of models on every
    validation row per block). The argument lies in [−1, 1], so nothing
    overflows; equal to the stacked form to rounding.
    """
    sign = np.where(np.asarray(y) == 1, 1.0, -1.0)
    return -np.log1p(np.exp(sign * (1.0 - 2.0 * p1))).mean(axis=-1)


def neg_brier_from_proba(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``-mean_i Σ_c (p_ic − 1[y_i = c])²``; ``proba`` is ``(..., n, C)``."""
    sq = (proba * proba).sum(axis=-1)  # Σ_c p_c², then correct the true class's term
    p_true = _pick(proba, y)
    return -(sq - 2.0 * p_true + 1.0).mean(axis=-1)


def neg_mse_from_pred(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``-mean (y - pred)²`` over the last axis; ``pred`` is ``(..., n)``."""
    return -np.mean((np.asarray(pred, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2, axis=-1)


def accuracy_from_pred(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (np.asarray(pred) == np.asarray(y)).mean(axis=-1)


@dataclass(frozen=True)
class Metric:
    """A utility: its task, and how it scores probabilities or predictions."""

    name: str
    task: str
    from_proba: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    from_pred: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    description: str = ""
    #: Binary shortcut: the score from P(class 1) alone, shape ``(..., n)`` (None: stack and use from_proba).
    from_p1: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None

    @property
    def needs_proba(self) -> bool:
        return self.from_proba is not None and self.from_pred is None


METRICS: dict[str, Metric] = {
    "neg_log_loss": Metric("neg_log_loss", "classification", from_proba=neg_log_loss_from_proba,
                           description="negative log-loss on validation (unbounded: values are "
                                       "specific to the validation rows)"),
    "accuracy": Metric("accuracy", "classification", from_proba=accuracy_from_proba,
                       from_pred=accuracy_from_pred, description="validation accuracy"),
    "paper_ce": Metric("paper_ce", "classification", from_proba=paper_ce_from_proba, from_p1=paper_ce_from_p1,
                       description="-cross_entropy(softmax(predict_proba)), as the paper's code (default: "
                                   "bounded, smooth, values transfer to unseen rows)"),
    "neg_brier": Metric("neg_brier", "classification", from_proba=neg_brier_from_proba,
                        description="negative Brier score on validation (bounded, smooth)"),
    "neg_mse": Metric("neg_mse", "regression", from_pred=neg_mse_from_pred,
                      description="negative mean squared error on validation (default)"),
}

_DEFAULTS = {"classification": "paper_ce", "regression": "neg_mse"}


def default_metric(task: str) -> str:
    """``paper_ce`` for classification (chosen by value transfer, module docstring), ``neg_mse`` for regression."""
    try:
        return _DEFAULTS[task]
    except KeyError:
        raise ConfigError(f"task={task!r} must be 'classification' or 'regression'") from None


def check_metric(metric: str, task: str) -> Metric:
    """The metric's entry; ConfigError if unknown or not fit for ``task``."""
    if is_sklearn_scorer(metric):
        return _check_scorer(metric, task)
    try:
        m = METRICS[metric]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown metric {metric!r}; valid metrics: {', '.join(sorted(METRICS))}, "
                          f"or {SKLEARN_PREFIX}NAME for a scikit-learn scorer") from None
    if m.task != task:
        valid = sorted(n for n, v in METRICS.items() if v.task == task)
        raise ConfigError(f"metric {metric!r} does not fit a {task} task; use one of {', '.join(valid)}")
    return m


def full_proba(estimator, X: np.ndarray, n_classes: int) -> np.ndarray:
    """``predict_proba`` laid out over all classes ``0..n_classes-1`` (zeros for absent ones)."""
    proba = np.asarray(estimator.predict_proba(X), dtype=np.float64)
    classes = np.asarray(getattr(estimator, "classes_", np.arange(proba.shape[1])))
    if proba.shape[1] == n_classes and np.array_equal(classes, np.arange(n_classes)):
        return proba
    out = np.zeros((proba.shape[0], n_classes))
    out[:, classes.astype(np.intp)] = proba
    return out


def utility(metric: str, estimator, X_val: np.ndarray, y_val: np.ndarray, n_classes: int) -> float:
    """U = the metric of a fitted ``estimator`` on the validation split (higher is better).

    Parameters
    ----------
    metric : str
        A key of :data:`METRICS`.
    estimator : fitted estimator
    X_val, y_val : arrays
        Validation split; classification labels are codes ``0..n_classes-1``.
    n_classes : int
        Number of classes (0 for regression).

    Returns
    -------
    float
        May be non-finite; the engine records such a fit as failed.
    """
    if is_sklearn_scorer(metric):
        return float(_scorer(metric[len(SKLEARN_PREFIX):])(estimator, X_val, y_val))
    m = METRICS[metric]
    if m.from_pred is not None and (m.from_proba is None or metric == "accuracy"):
        return float(m.from_pred(estimator.predict(X_val), y_val))
    return float(m.from_proba(full_proba(estimator, X_val, n_classes), y_val))


# --------------------------------------------------------------------------- scikit-learn scorers

SKLEARN_PREFIX = "sklearn:"


def is_sklearn_scorer(metric: object) -> bool:
    """True for ``"sklearn:NAME"``."""
    return isinstance(metric, str) and metric.startswith(SKLEARN_PREFIX)


@functools.lru_cache(maxsize=None)
def _scorer(name: str):
    from sklearn.metrics import get_scorer

    return get_scorer(name)


def scorer_task(name: str) -> str:
    """The task a scikit-learn scorer scores, from the module of its score function."""
    module = getattr(getattr(_scorer(name), "_score_func", None), "__module__", "") or ""
    return "regression" if module.endswith("_regression") else "classification"


def _check_scorer(metric: str, task: str) -> Metric:
    from sklearn.metrics import get_scorer_names

    name = metric[len(SKLEARN_PREFIX):]
    names = get_scorer_names()
    if name not in names:
        close = [n for n in names if name and (name in n or n in name)][:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown scikit-learn scorer {name!r}{hint}; valid names: "
                          "sklearn.metrics.get_scorer_names()")
    scored = scorer_task(name)
    if scored != task:
        raise ConfigError(f"metric {metric!r} scores {scored}, so it does not fit a {task} task")
    return Metric(metric, task, description=f"scikit-learn scorer {name!r}")


def response_methods(metric: str) -> tuple[str, ...]:
    """What a model must offer for ``metric``: any one of these methods."""
    if is_sklearn_scorer(metric):
        method = getattr(_scorer(metric[len(SKLEARN_PREFIX):]), "_response_method", "predict")
        return (method,) if isinstance(method, str) else tuple(method)
    m = METRICS[metric]
    if m.from_pred is not None and (m.from_proba is None or metric == "accuracy"):
        return ("predict",)
    return ("predict_proba",)


def check_metric_on(metric: str, dataset) -> None:
    """Try a scikit-learn scorer on a constant model over the validation split.

    Catches scorers that fit the task in general but not this data (a binary
    scorer on three classes, a Poisson deviance on negative targets) before
    any compute. Built-in metrics need no trial.
    """
    if not is_sklearn_scorer(metric):
        return
    from sklearn.dummy import DummyClassifier, DummyRegressor

    y = np.asarray(dataset.y_train)
    dummy = DummyClassifier(strategy="prior") if dataset.task == "classification" else DummyRegressor()
    dummy.fit(np.zeros((len(y), 1)), y)
    X_val = np.zeros((len(dataset.y_val), 1))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = utility(metric, dummy, X_val, np.asarray(dataset.y_val), dataset.n_classes)
    except Exception as exc:  # noqa: BLE001 -- scikit-learn raises ValueError/TypeError and more
        raise ConfigError(f"metric {metric!r} cannot score the validation split of {dataset.name}: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not np.isfinite(value) and not np.isinf(value):
        raise ConfigError(f"metric {metric!r} gives {value} on the validation split of {dataset.name}")
