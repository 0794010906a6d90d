r"""The registry's SVM on kernels computed once per block.

The registry's ``svm`` (:class:`~.models.PlattSVC`) is an RBF SVC with Platt
probabilities: ``CalibratedClassifierCV(SVC, method="sigmoid", cv=5 seeded
stratified folds, ensemble=False)`` -- five fold fits whose decision values
fit the sigmoid, then one fit on all rows. Each of the six SVC fits, and
every prediction, evaluates

.. math::  K(x, x') = \exp(-γ \lVert x - x' \rVert^2), \qquad
           γ = 1 / (d \cdot \operatorname{Var}(X_{\text{train}}))   (``gamma="scale"``),

from the features again. Within a block, every fit trains on rows of
D ∪ {z₁ … z_B} and predicts rows of those and of the validation split, so
the squared distances between all of them are computed once per block
(one matrix product) and every SVC is fitted with ``kernel="precomputed"``
on a slice. γ depends on each fit's own training rows (each fold's too), so
it is recomputed per fit from the same rows in the same order as the
registry's SVC computes it; only ``exp(−γ S)`` of the slice is evaluated per
fit. Fold splits, seeds and the sigmoid fit are scikit-learn's own
(``CalibratedClassifierCV`` runs unchanged on an estimator whose "features"
are row numbers into the block's table), so U(D) and U(D ∪ {z}) equal the
registry SVM's up to the rounding of the kernel values (measured in
``tests/core/test_batched_models.py`` and ``benchmarks/sampling.py --models``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.svm import SVC

from .metrics import METRICS

#: PlattSVC settings this path honours; any other setting (another kernel, a
#: numeric gamma is fine) sends the block to the registry's estimator.
HONOURED = {"C", "kernel", "gamma", "tol", "class_weight", "cv", "random_state", "degree", "coef0"}


class _Rows:
    """The block's table: features and squared distances. Shared, never copied by ``clone``."""

    def __init__(self, F: np.ndarray, S: np.ndarray) -> None:
        self.F, self.S = F, S

    def __deepcopy__(self, memo):
        return self


class RowSVC(ClassifierMixin, BaseEstimator):
    """``SVC(kernel="rbf")`` whose inputs are row numbers into a :class:`_Rows` table.

    ``fit(R, y)`` with ``R`` of shape (n, 1) trains on the table's rows
    ``R[:, 0]`` with ``kernel="precomputed"`` and the γ that ``SVC`` would
    compute from those rows' features.
    """

    def __init__(self, rows=None, C=1.0, gamma="scale", tol=1e-3, class_weight=None, random_state=None):
        self.rows, self.C, self.gamma, self.tol = rows, C, gamma, tol
        self.class_weight, self.random_state = class_weight, random_state

    def _gamma_of(self, X: np.ndarray) -> float:
        if self.gamma == "scale":
            var = X.var()  # SVC's own arithmetic (dense input), on the same rows in the same order
            return 1.0 / (X.shape[1] * var) if var != 0 else 1.0
        if self.gamma == "auto":
            return 1.0 / X.shape[1]
        return float(self.gamma)

    def fit(self, R, y):
        idx = np.asarray(R)[:, 0].astype(np.intp)
        self.train_rows_ = idx
        self.gamma_ = self._gamma_of(self.rows.F[idx])
        K = _rbf(self.rows.S, idx, idx, self.gamma_)
        self.svc_ = SVC(C=self.C, kernel="precomputed", tol=self.tol, class_weight=self.class_weight,
                        random_state=self.random_state).fit(K, y)
        self.classes_ = self.svc_.classes_
        return self

    def predict(self, R):
        return self.svc_.predict(self._kernel(R))

    def _kernel(self, R):
        return _rbf(self.rows.S, np.asarray(R)[:, 0].astype(np.intp), self.train_rows_, self.gamma_)

    def decision_function(self, R):
        return self.svc_.decision_function(self._kernel(R))


def _rbf(S: np.ndarray, rows: np.ndarray, cols: np.ndarray, gamma: float) -> np.ndarray:
    """``exp(−γ S[rows][:, cols])`` (two takes gather faster than ``np.ix_``; exp in place)."""
    K = S.take(rows, axis=0).take(cols, axis=1)
    K *= -gamma
    return np.exp(K, out=K)


def squared_distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """‖a − b‖² for all pairs, clipped at 0 (rounding of the expanded form)."""
    S = np.einsum("ij,ij->i", A, A)[:, None] + np.einsum("ij,ij->i", B, B)[None, :] - 2.0 * (A @ B.T)
    return np.maximum(S, 0.0)


class SVMBlockSolver:
    """A block's base and every D ∪ {z} with the registry's SVM on one distance table.

    Parameters
    ----------
    params : mapping
        PlattSVC settings (registry defaults filled in).
    n_classes : int
    X_val, y_val : arrays
    metric : str
    """

    method = "precomputed_kernel"

    def __init__(self, params: Mapping[str, Any], n_classes: int, X_val, y_val, metric: str) -> None:
        self.params = dict(params)
        self.n_classes = int(n_classes)
        self.X_val = np.asarray(X_val, dtype=np.float64)
        self.y_val = np.asarray(y_val)
        self.metric = metric

    def _fit(self, rows: _Rows, idx: np.ndarray, y: np.ndarray, seed: int):
        """``CalibratedClassifierCV(SVC, sigmoid, folds, ensemble=False).fit`` on table rows ``idx``.

        The same steps as scikit-learn's (the registry's :class:`~.models.PlattSVC`): decision
        values of each fold's model on its held-out rows, one model on all rows, then
        scikit-learn's own sigmoid fit (``_fit_calibrator``); without the per-call
        validation and cloning, which cost more than the SVC fits at these sizes.
        """
        from sklearn.calibration import _fit_calibrator
        from sklearn.model_selection import StratifiedKFold
        from sklearn.utils._array_api import get_namespace

        p = self.params
        make = lambda: RowSVC(rows, C=p.get("C", 1.0), gamma=p.get("gamma", "scale"),  # noqa: E731
                              tol=p.get("tol", 1e-3), class_weight=p.get("class_weight"), random_state=seed)
        R = idx[:, None]
        classes = np.unique(y)
        # The registry's fold rule (models.PlattSVC.fit), on the same labels in the same order.
        smallest = int(np.bincount(np.unique(y, return_inverse=True)[1]).min())
        folds = StratifiedKFold(n_splits=max(2, min(int(p.get("cv", 5)), smallest)), shuffle=True,
                                random_state=seed)
        predictions = np.empty((len(idx), 1 if len(classes) == 2 else len(classes)))
        for train, test in folds.split(R, y):
            values = make().fit(R[train], y[train]).decision_function(R[test])
            predictions[test] = values.reshape(len(test), -1)
        final = make().fit(R, y)
        return _fit_calibrator(final, predictions, y, classes, "sigmoid", get_namespace(predictions)[0])

    def __call__(self, Xd, yd, Xz, yz, seed: int | None = None):
        from .fastpath import BlockFit
        from .metrics import full_proba

        Xd = np.asarray(Xd, dtype=np.float64)
        k, B = len(Xd), len(Xz)
        F = np.vstack([Xd, np.asarray(Xz, dtype=np.float64), self.X_val])
        train = F[:k + B]
        rows = _Rows(F, np.vstack([squared_distances(train, F),
                                   np.zeros((len(self.X_val), len(F)))]))
        rows.S[k + B:, :k + B] = rows.S[:k + B, k + B:].T     # validation rows: distances to training rows
        val_idx = np.arange(k + B, len(F))[:, None]
        seed = 0 if seed is None else int(seed)
        metric = METRICS[self.metric]

        def score(model) -> float:
            # predict() of the calibrated model is the argmax of these probabilities
            return float(metric.from_proba(full_proba(_Proba(model, val_idx), None, self.n_classes), self.y_val))

        base_idx = np.arange(k)
        base = self._fit(rows, base_idx, np.asarray(yd), seed)
        u_base = score(base)
        u_with = np.empty(B)
        y_all = np.concatenate([np.asarray(yd), np.asarray(yz)])
        for j in range(B):
            idx = np.append(base_idx, k + j)
            u_with[j] = score(self._fit(rows, idx, y_all[idx], seed))

        def predict_base(X):
            """The base model's probabilities on rows X (distances to D computed here)."""
            Fx = np.asarray(X, dtype=np.float64)
            local = _Rows(np.vstack([Xd, Fx]), np.zeros((k + len(Fx), k + len(Fx))))
            local.S[k:, :k] = squared_distances(Fx, Xd)
            est = base.estimator
            est.rows, saved = local, est.rows
            try:
                return full_proba(_Proba(base, np.arange(k, k + len(Fx))[:, None]), None, self.n_classes)
            finally:
                est.rows = saved

        return BlockFit(u_base=u_base, u_with=u_with, converged=np.ones(B, dtype=bool), method=self.method,
                        predict_base=predict_base)


class _Proba:
    """Adapts a fitted calibrated model to :func:`full_proba` (``predict_proba(ignored)``)."""

    def __init__(self, model, idx) -> None:
        self.model, self.idx, self.classes_ = model, idx, model.classes

    def predict_proba(self, _):
        return self.model.predict_proba(self.idx)


def svm_solver_for(params: Mapping[str, Any], task: str, n_classes: int, X_val, y_val, metric: str):
    """The block solver when the settings are ones it reproduces exactly, else None."""
    if task != "classification" or set(params) - HONOURED or params.get("kernel", "rbf") != "rbf":
        return None
    return SVMBlockSolver(params, n_classes, X_val, y_val, metric)
