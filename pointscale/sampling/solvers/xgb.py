r"""The registry's XGBoost, fitted on plain ``DMatrix`` objects: the same models, a third of the time.

For ``tree_method="hist"`` the scikit-learn wrapper (``XGBClassifier.fit``)
builds its training data as a ``QuantileDMatrix``. At a valuation block's
sizes that container, not the boosting, is most of the fit: measured on adult
(k = 551, 108 features, 50 trees of depth 4, one thread) the
``QuantileDMatrix`` took 95 ms (75 ms of it storing integer labels), the 50
boosting rounds 44 ms, and a plain ``DMatrix`` 0.6 ms, with the
histogram cuts then sketched inside the first boosting round (a few ms).

The cuts are the same either way (XGBoost sketches one in-memory batch
with the same quantile sketch from both containers), so the booster is the
same, tree for tree, and so are its predictions: this solver reproduces a
cold fit of the registry's estimator *bit for bit* (``tests/core/test_xgb_solver.py``
checks U(D) and U(D ∪ {z}) against the estimator on binary, multi-class and
regression data; ``benchmarks/throughput.py`` reports the largest |Δ
difference| over a run's blocks, and the speed ratio). It is the wrapper's
own sequence with the container swapped: ``get_xgb_params()``, the
multi-class objective switch of ``XGBClassifier.fit``, ``xgboost.train`` for
``get_num_boosting_rounds()`` rounds, ``inplace_predict`` and the wrapper's
probability layout (binary: ``[1 − p, p]`` in float32).

Settings the wrapper treats specially (callbacks, early stopping, evaluation
metrics, feature weights, categorical data, a callable objective, another
tree method, booster or device) make the builder decline, and the engine
fits those with the estimator itself. The base model and every D ∪ {z} are
cold fits, as on the generic path, so the ledger's ``method`` stays ``cold``.

Shared histogram bins across a block (cuts sketched once on D ∪ {z₁ … z_B}
and reused through ``QuantileDMatrix(ref=...)``) would save only the
sketch, a few ms of a ~45 ms fit, and change the model: a cut from another
point of the block splits where this fit's own rows would not. So it is not
offered; ``benchmarks/throughput.py`` measures it (speed and Δ agreement)
as the reason.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..metrics import METRICS
from .base import BlockFit

#: Wrapper settings that must keep their defaults for the wrapper's fit to be train() on a DMatrix.
_UNSET = ("callbacks", "early_stopping_rounds", "eval_metric", "feature_weights", "feature_types")


def _declines(params: Mapping[str, Any]) -> bool:
    if any(params.get(name) is not None for name in _UNSET):
        return True
    if params.get("enable_categorical") or callable(params.get("objective")):
        return True
    if params.get("objective") == "multi:softmax":  # predict_proba is a softmax of margins there
        return True
    return (params.get("tree_method") != "hist" or params.get("booster") not in (None, "gbtree")
            or params.get("device") not in (None, "cpu"))


class XGBoostBlockSolver:
    """A block's base D and every D ∪ {z}, each a cold fit of the registry's XGBoost on a ``DMatrix``.

    Parameters
    ----------
    params : mapping
        The estimator's settings (``get_params()`` of the registry's estimator).
    task : str
    n_classes : int
    X_val, y_val : arrays
    metric : str
        A key of :data:`~pointscale.sampling.metrics.METRICS` scored from probabilities
        (classification) or predictions (regression).
    """

    method = "cold"
    exact = True

    def __init__(self, params: Mapping[str, Any], task: str, n_classes: int, X_val, y_val, metric: str) -> None:
        self.params, self.task, self.n_classes = dict(params), task, int(n_classes)
        self.X_val, self.y_val = X_val, np.asarray(y_val)
        self.metric = METRICS[metric]

    def _native(self, seed: int) -> tuple[dict[str, Any], int]:
        """The booster's parameters and rounds as the wrapper's ``fit`` passes them to ``train``."""
        from xgboost import XGBClassifier, XGBRegressor

        cls = XGBClassifier if self.task == "classification" else XGBRegressor
        est = cls(**{**self.params, "random_state": int(seed)})
        params = est.get_xgb_params()
        if self.task == "classification" and self.n_classes > 2:  # XGBClassifier.fit's switch
            params["objective"] = "multi:softprob"
            params["num_class"] = self.n_classes
        return params, est.get_num_boosting_rounds()

    def _fit(self, params, rounds, X, y):
        import xgboost

        dtrain = xgboost.DMatrix(X, y, missing=self.params.get("missing", np.nan), nthread=self.params.get("n_jobs"))
        return xgboost.train(params, dtrain, num_boost_round=rounds, verbose_eval=False)

    def _outputs(self, booster, X) -> np.ndarray:
        """``predict_proba`` (classification) or ``predict`` (regression) of the wrapper, same dtype."""
        pred = booster.inplace_predict(X, iteration_range=(0, 0), predict_type="value",
                                       missing=self.params.get("missing", np.nan))
        if self.task == "regression" or pred.ndim == 2:
            return pred
        return np.vstack((1.0 - pred, pred)).transpose()  # _cls_predict_proba's binary layout

    def _score(self, booster) -> float:
        out = self._outputs(booster, self.X_val)
        if self.task == "regression":
            return float(self.metric.from_pred(out, self.y_val))
        return float(self.metric.from_proba(np.asarray(out, dtype=np.float64), self.y_val))

    def __call__(self, Xd, yd, Xz, yz, seed: int | None = None):
        if self.task == "classification" and len(np.unique(yd)) < self.n_classes:
            return None  # XGBClassifier rejects a D without every class: the estimator records that
        params, rounds = self._native(0 if seed is None else int(seed))
        Xd, yd = np.asarray(Xd), np.asarray(yd)
        base = self._fit(params, rounds, Xd, yd)
        u_base = self._score(base)
        k, B = len(Xd), len(Xz)
        X = np.empty((k + 1, Xd.shape[1]), dtype=Xd.dtype)
        X[:k] = Xd
        y = np.empty(k + 1, dtype=yd.dtype)
        y[:k] = yd
        u_with = np.empty(B)
        for j in range(B):
            X[k], y[k] = Xz[j], yz[j]
            u_with[j] = self._score(self._fit(params, rounds, X, y))

        def predict_base(Xo):
            out = self._outputs(base, Xo)
            return np.asarray(out, dtype=np.float64)

        return BlockFit(u_base=u_base, u_with=u_with, converged=np.ones(B, dtype=bool), method=self.method,
                        predict_base=predict_base)


def build(params: Mapping[str, Any], task: str, n_classes: int, X_val, y_val, metric: str, device=None):
    """The solver when the settings are ones it reproduces exactly, else None (:class:`~.base.SolverBuilder`)."""
    if device is not None and device.is_gpu:
        return None
    m = METRICS[metric]
    scores_proba = task == "classification" and m.from_proba is not None and metric != "accuracy"
    scores_pred = task == "regression" and m.from_pred is not None
    if not (scores_proba or scores_pred) or _declines(params):
        return None
    return XGBoostBlockSolver(params, task, n_classes, X_val, y_val, metric)
