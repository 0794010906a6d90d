r"""The registry's RBF SVM, and a block's fits of it on one distance table.

The registry's ``svm`` (:class:`PlattSVC`) is an RBF SVC with Platt
probabilities: ``CalibratedClassifierCV(SVC, method="sigmoid", cv=5 seeded
stratified folds, ensemble=False)`` -- five fold fits whose decision values
fit the sigmoid, then one fit on all rows. Each of the six SVC fits, and
every prediction, uses

.. math::  K(x, x') = \exp(-γ\, s(x, x')), \qquad s(x, x') = \lVert x - x' \rVert^2, \qquad
           γ = 1 / (d \cdot \operatorname{Var}(X_{\text{fit}}))   (``gamma="scale"``),

with γ recomputed from each fit's own training rows (each fold's too).

**Why the kernel is computed here, not inside libsvm.** libsvm evaluates
:math:`s` itself, with BLAS dot products (``x·x + x'·x' − 2 x·x'`` when
training, ``(x − x')·(x − x')`` when predicting), so each kernel value carries
rounding that depends on the BLAS kernel of the machine. SMO stops at a
tolerance (``tol=1e-3`` on the dual gap): a last-bit change of one kernel value
now and then changes which pair SMO updates or whether it stops one step
earlier, and the model moves within that tolerance -- measured on adult
(k = 100..1000): 1 SVC fit in 30 took a different number of SMO iterations
(471 vs 468) when its kernel came from one matrix product instead, and Δ
then differed by up to 4e-6. Reproducing libsvm's kernel bit for bit outside
libsvm would take its BLAS ``ddot`` called once per pair (its summation
order is not a matrix product's) and libm's ``exp`` (numpy's agrees with it
on 95 % of arguments, measured): far slower than the fits it would save.
The registry therefore computes the kernel here and fits
``SVC(kernel="precomputed")``; libsvm's SMO, the folds and the sigmoid are
unchanged, and the model differs from libsvm computing the kernel by what
that rounding moves (the benchmark reports it). It is also faster: 1.6x at
k = 700..1000 on adult (one kernel matrix product instead of libsvm's
per-pair dot products); every fit of a block
then sees *bit-identical* kernel values to a cold fit of the registry model
on the same rows, provided :math:`s(x, x')` depends on the two rows alone.

**Distances that depend on the two rows alone.** A plain matrix product does
not give that: BLAS sums each dot product in an order that depends on the
matrix shapes (measured: 0.9 % of the entries of ``A @ B.T`` change in the
last bit when the same rows sit in a differently shaped product). The Gram
matrix is therefore computed exactly (Ozaki's splitting): each row is scaled
by a power of two so that its largest entry is below :math:`2^b`, and split
into three integer-valued slices :math:`x = 2^{e}(x_0 + 2^{-b} x_1 + 2^{-2b}
x_2)` (remainder below :math:`2^{-2b}` relative to the row's largest entry,
dropped). With :math:`2b + \lceil\log_2(3d)\rceil \le 53` every product
:math:`x_p \cdot x'_q` of slices, and every partial sum of ``d`` (or ``3d``)
of them, is an integer below :math:`2^{53}`: the matrix products are exact
in any summation order, on any BLAS. The three products (terms of order
:math:`2^0, 2^{-b}, 2^{-2b}`) are combined element by element in a fixed
order, so :math:`x \cdot x'` is a function of the two rows only, accurate to
double rounding. Then :math:`s = x·x + x'·x' − 2\,x·x'` (clipped at 0; exactly
0 for equal rows). On dense features it costs three matrix products with 1,
2 and 3 times the inner dimension (six plain products); the lower slices are
zero in columns whose values need no more than :math:`b` bits (one-hot,
integers), and their products skip those columns (adult: 6 of 108 columns
remain), so there it costs about three plain products.

:class:`RowSVC` is the SVC on such a table: its "features" are row numbers
into a :class:`DistanceTable`, so ``CalibratedClassifierCV`` runs unchanged
on it. :class:`SVMBlockSolver` fits a block's base D and every D ∪ {z} on one
table of D ∪ {z₁ … z_B} ∪ validation rows, computed once per block, with the
same folds, seeds and sigmoid as the registry (scikit-learn's own
``_sigmoid_calibration``; ``_fit_calibrator`` for more than two classes) and
libsvm called directly (the estimator wrappers' input checks cost more than
the fits at these sizes); U(D) and U(D ∪ {z})
equal a cold registry fit's exactly (``tests/core/test_batched_models.py``,
``benchmarks/sampling.py --models``).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import numpy as np
from sklearn import config_context
from sklearn.base import BaseEstimator, ClassifierMixin

from ..estimators import ExplicitParams
from ..metrics import METRICS, full_proba
from .base import BlockFit

#: PlattSVC settings this path honours; any other setting (another kernel, a
#: numeric gamma is fine) sends the block to the registry's estimator.
HONOURED = {"C", "kernel", "gamma", "tol", "class_weight", "cv", "random_state", "degree", "coef0"}


# --------------------------------------------------------------------------- distances


def _split_bits(d: int) -> int:
    """Bits per slice: sums of up to 3d products of two slices stay below 2**53."""
    return (53 - int(np.ceil(np.log2(max(3 * d, 2))))) // 2


def _slices(X: np.ndarray, b: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Three integer-valued slices of each row and the row's power-of-two scale (all exact)."""
    top = np.abs(X).max(axis=1) if X.shape[1] else np.zeros(len(X))
    e = np.frexp(top)[1]                     # |x_ij| < 2**e_i
    R = X * np.ldexp(1.0, b - e)[:, None]    # |R| < 2**b, exact (power of two)
    out = []
    for _ in range(3):
        s = np.rint(R)
        out.append(s)
        R = (R - s) * 2.0 ** b               # exact: the remainder has fewer bits than R
    return out, np.ldexp(1.0, e - b)


def _combine(p00, q1, q2, b: int, ra, rb):
    """``(p00 + 2^-b q1 + 2^-2b q2) · ra · rb`` in one fixed order (the only rounding steps)."""
    G = q1 * 2.0 ** -b
    G += p00
    G += q2 * 2.0 ** (-2 * b)
    G *= ra
    G *= rb
    return G


def gram(A: np.ndarray, B: np.ndarray | None = None) -> np.ndarray:
    """``A @ B.T`` (``B=None``: ``A @ A.T``) with each entry a function of its two rows only.

    Every slice product below is an exact integer matrix, whatever the BLAS sums first or
    leaves out: so ``A @ A.T`` may go by halves (syrk), and the lower slices' products may skip
    the columns where they are all zero (one-hot and integer columns have no lower bits; on
    adult 6 of 108 columns have any), and the values stay those of the general formula.
    """
    A = np.asarray(A, dtype=np.float64)
    b = _split_bits(A.shape[1])
    (a0, a1, a2), ra = _slices(A, b)
    if B is None:
        (b0, b1, b2), rb = (a0, a1, a2), ra
    else:
        (b0, b1, b2), rb = _slices(np.asarray(B, dtype=np.float64), b)
    p00 = a0 @ b0.T  # a0 @ a0.T when B is None: numpy uses the symmetric product
    c = (a1 != 0).any(axis=0) | (a2 != 0).any(axis=0) | (b1 != 0).any(axis=0) | (b2 != 0).any(axis=0)
    a0, a1, a2, b0, b1, b2 = (m[:, c] for m in (a0, a1, a2, b0, b1, b2))
    q1 = np.hstack([a0, a1]) @ np.hstack([b1, b0]).T
    q2 = np.hstack([a0, a2, a1]) @ np.hstack([b2, b0, b1]).T
    return _combine(p00, q1, q2, b, ra[:, None], rb[None, :])


def _sq_norms(X: np.ndarray) -> np.ndarray:
    """``diag(gram(X))`` by the same arithmetic, row by row."""
    X = np.asarray(X, dtype=np.float64)
    b = _split_bits(X.shape[1])
    (x0, x1, x2), r = _slices(X, b)
    dot = lambda u, v: np.einsum("ij,ij->i", u, v)  # noqa: E731 -- exact integers, any order
    return _combine(dot(x0, x0), dot(x0, x1) + dot(x1, x0), (dot(x0, x2) + dot(x2, x0)) + dot(x1, x1), b, r, r)


def squared_distances(A: np.ndarray, B: np.ndarray | None = None) -> np.ndarray:
    """‖a − b‖² for all pairs (``B=None``: within A), each a function of its two rows only; ≥ 0."""
    na = _sq_norms(A)
    G = gram(A, B)
    S = na[:, None] + (na if B is None else _sq_norms(B))[None, :]
    S -= 2.0 * G
    return np.maximum(S, 0.0, out=S)


class DistanceTable:
    """Rows ``F`` and their squared distances ``S`` to the first ``S.shape[1]`` rows (the training rows).

    Shared, never copied by ``clone`` (a fitted :class:`RowSVC` holds a reference).
    """

    def __init__(self, F: np.ndarray, S: np.ndarray) -> None:
        self.F, self.S = F, S

    @classmethod
    def of(cls, F: np.ndarray, n_train: int | None = None) -> "DistanceTable":
        F = np.ascontiguousarray(F, dtype=np.float64)
        if n_train is None or n_train == len(F):
            return cls(F, squared_distances(F))
        return cls(F, squared_distances(F, F[:n_train]))

    def with_rows(self, X: np.ndarray, cols: np.ndarray | None = None) -> tuple["DistanceTable", np.ndarray]:
        """The training rows plus rows ``X``, and X's row numbers in it.

        X's distances are computed here, to the training rows ``cols`` only (default: all);
        the new table serves blocks of X's rows against those columns.
        """
        n = self.S.shape[1]
        cols = np.arange(n) if cols is None else np.asarray(cols, dtype=np.intp)
        X = np.ascontiguousarray(X, dtype=np.float64)
        table = _Extended(self, X, squared_distances(X, self.F.take(cols, axis=0)), cols)
        return table, np.arange(n, n + len(X))

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.S.take(rows, axis=0).take(cols, axis=1)

    def features(self, rows: np.ndarray) -> np.ndarray:
        return self.F.take(rows, axis=0)

    def __deepcopy__(self, memo):
        return self


class _Extended(DistanceTable):
    """A table's training rows plus new rows, without copying the training distances."""

    def __init__(self, base: DistanceTable, X: np.ndarray, S_new: np.ndarray, cols: np.ndarray) -> None:
        self.base, self.X, self.S_new, self.n = base, X, S_new, base.S.shape[1]
        self.position = np.full(self.n, -1, dtype=np.intp)
        self.position[cols] = np.arange(len(cols))

    def block(self, rows, cols):
        rows = np.asarray(rows)
        if rows.size and rows.min() >= self.n:
            at = self.position[cols]
            if at.size and at.min() < 0:
                raise ValueError("distances of the new rows to these training rows were not computed")
            return self.S_new.take(rows - self.n, axis=0).take(at, axis=1)
        if rows.size and rows.max() >= self.n:
            raise ValueError("a block mixes training rows and new rows")
        return self.base.block(rows, cols)

    def features(self, rows):
        rows = np.asarray(rows)
        return self.base.features(rows) if rows.max() < self.n else self.X.take(rows - self.n, axis=0)


def rbf(table: DistanceTable, rows: np.ndarray, cols: np.ndarray, gamma: float) -> np.ndarray:
    """``exp(−γ S[rows][:, cols])``, C-contiguous (every caller computes it this way, bit for bit)."""
    K = table.block(rows, cols)
    K *= -gamma
    return np.exp(K, out=K)


def gamma_of(X: np.ndarray, gamma) -> float:
    """γ as ``SVC`` computes it from the fit's rows (same arithmetic, same rows in the same order)."""
    if gamma == "scale":
        var = X.var()
        return 1.0 / (X.shape[1] * var) if var != 0 else 1.0
    if gamma == "auto":
        return 1.0 / X.shape[1]
    return float(gamma)


def platt_folds(y: np.ndarray, cv: int, seed):
    """The registry's folds: seeded stratified, fewer when a class has fewer than ``cv`` rows."""
    from sklearn.model_selection import StratifiedKFold

    smallest = int(np.bincount(np.unique(y, return_inverse=True)[1]).min())
    return StratifiedKFold(n_splits=max(2, min(int(cv), smallest)), shuffle=True, random_state=seed)


def _on_support(table: DistanceTable, rows, train_rows, support, gamma) -> np.ndarray:
    """The kernel of ``rows`` against the training rows, computed on the support columns only.

    libsvm reads nothing else (the other columns multiply zero dual coefficients and are never
    touched), so the decision values equal those of the full kernel bit for bit.
    """
    K = np.zeros((len(rows), len(train_rows)))
    K[:, support] = rbf(table, rows, train_rows[support], gamma)
    return K


class RowSVC(ClassifierMixin, BaseEstimator):
    """``SVC(kernel="rbf")`` whose inputs are row numbers into a :class:`DistanceTable`.

    ``fit(R, y)`` with ``R`` of shape (n, 1) trains ``SVC(kernel="precomputed")``
    on the kernel of the table's rows ``R[:, 0]``, with the γ ``SVC`` would
    compute from those rows' features.
    """

    def __init__(self, table=None, C=1.0, gamma="scale", tol=1e-3, class_weight=None, random_state=None):
        self.table, self.C, self.gamma, self.tol = table, C, gamma, tol
        self.class_weight, self.random_state = class_weight, random_state

    def fit(self, R, y):
        from sklearn.svm import SVC

        idx = np.asarray(R)[:, 0].astype(np.intp)
        self.train_rows_ = idx
        self.gamma_ = gamma_of(self.table.features(idx), self.gamma)
        # gamma=1.0: unused by a precomputed kernel; a string would make SVC scan K for nothing
        self.svc_ = SVC(C=self.C, kernel="precomputed", gamma=1.0, tol=self.tol, class_weight=self.class_weight,
                        random_state=self.random_state).fit(rbf(self.table, idx, idx, self.gamma_), y)
        self.classes_ = self.svc_.classes_
        return self

    def _kernel(self, R):
        rows = np.asarray(R)[:, 0].astype(np.intp)
        return _on_support(self.table, rows, self.train_rows_, self.svc_.support_, self.gamma_)

    def decision_function(self, R):
        return self.svc_.decision_function(self._kernel(R))

    def predict(self, R):
        return self.svc_.predict(self._kernel(R))


@functools.lru_cache(maxsize=64)
def _libsvm_seed(seed) -> int:
    """The seed ``SVC.fit`` draws for libsvm from ``random_state`` (it only matters for probability=True)."""
    return int(np.random.RandomState(seed).randint(np.iinfo("i").max))


class _LibsvmSVC(ClassifierMixin, BaseEstimator):
    """:class:`RowSVC` with libsvm called directly: the same arguments ``SVC`` passes, no input checks.

    Used inside a block only, where the inputs are known to be valid; its decision values are
    ``RowSVC``'s bit for bit (``tests/core/test_batched_models.py``).
    """

    def __init__(self, table, params: Mapping[str, Any], seed) -> None:
        self.table, self.params, self.seed = table, params, seed

    def fit(self, idx: np.ndarray, codes: np.ndarray, classes: np.ndarray, class_weight: np.ndarray):
        from sklearn.svm import _libsvm

        p = self.params
        _libsvm.set_verbosity_wrap(0)  # as SVC.fit does (libsvm's verbosity is a process-wide switch)
        self.train_rows_, self.classes_ = idx, classes
        self.gamma_ = gamma_of(self.table.features(idx), p.get("gamma", "scale"))
        # SVC.fit draws libsvm's seed from random_state (it only matters for probability=True)
        random_seed = _libsvm_seed(self.seed)
        (self.support_, self.sv_, self.n_support_, self.dual_coef_, self.intercept_, self.prob_a_,
         self.prob_b_, _, self.n_iter_) = _libsvm.fit(
            rbf(self.table, idx, idx, self.gamma_), codes, svm_type=0, sample_weight=np.empty(0),
            class_weight=class_weight, kernel="precomputed", C=float(p.get("C", 1.0)), nu=0.0,
            probability=False, degree=3, shrinking=True, tol=float(p.get("tol", 1e-3)), cache_size=200.0,
            coef0=0.0, gamma=1.0, epsilon=0.0, max_iter=-1, random_seed=random_seed)
        self.support_cols_ = np.arange(len(self.support_), dtype=np.int32)
        return self

    def decision_function(self, R):
        from sklearn.svm import _libsvm

        rows = np.asarray(R)[:, 0].astype(np.intp)
        # The kernel on the support columns only, with the support renumbered to match: libsvm reads
        # the same values in the same order as from the full-width kernel.
        K = rbf(self.table, rows, self.train_rows_[self.support_], self.gamma_)
        dec = _libsvm.decision_function(K, self.support_cols_, self.sv_, self.n_support_, self.dual_coef_,
                                        self.intercept_, self.prob_a_, self.prob_b_, svm_type=0,
                                        kernel="precomputed", degree=3, cache_size=200.0, coef0=0.0, gamma=1.0)
        if len(self.classes_) == 2:
            return -dec.ravel()  # SVC's sign convention for two classes
        from sklearn.utils.multiclass import _ovr_decision_function

        return _ovr_decision_function(dec < 0, -dec, len(self.classes_))  # decision_function_shape="ovr"


def _class_weight(class_weight, classes: np.ndarray, y: np.ndarray) -> np.ndarray:
    if class_weight is None:
        return np.ones(len(classes))  # compute_class_weight's uniform weights, without its checks
    from sklearn.utils.class_weight import compute_class_weight

    return np.asarray(compute_class_weight(class_weight, classes=classes, y=y), dtype=np.float64)


class _BinaryPlatt:
    """A fitted binary Platt model: ``P(class 1) = expit(−(a·f + b))`` of the final SVC's decision f.

    scikit-learn's ``_CalibratedClassifier`` for two classes, step for step (its sigmoid's
    ``predict`` and the ``1 − p`` column), without its per-call checks.
    """

    def __init__(self, estimator, a: float, b: float, classes) -> None:
        self.estimator, self.a, self.b, self.classes = estimator, a, b, classes

    def predict_proba(self, R):
        from scipy.special import expit

        proba = np.zeros((len(R), 2))
        proba[:, 1] = expit(-(self.a * self.estimator.decision_function(R) + self.b))
        proba[:, 0] = 1.0 - proba[:, 1]
        return proba


def fit_platt_rows(table: DistanceTable, idx: np.ndarray, y: np.ndarray, params: Mapping[str, Any], seed,
                   folds=None):
    """``CalibratedClassifierCV(SVC, sigmoid, folds, ensemble=False).fit`` on table rows ``idx``.

    The same steps as scikit-learn's (the registry's :class:`PlattSVC`): decision
    values of each fold's model on its held-out rows (models trained on the encoded labels,
    as ``cross_val_predict`` does), one model on all rows, then scikit-learn's own sigmoid fit.
    ``folds``: the ``(train, test)`` splits when already drawn (they depend on y and the seed only).
    """
    classes, codes = np.unique(y, return_inverse=True)
    fold_classes = np.arange(len(classes))
    codes = codes.astype(np.float64)
    weights = _class_weight(params.get("class_weight"), fold_classes, codes)
    predictions = np.empty((len(idx), 1 if len(classes) == 2 else len(classes)))
    if folds is None:
        folds = list(platt_folds(y, params.get("cv", 5), seed).split(idx[:, None], y))
    for train, test in folds:
        fold_codes = codes[train]
        fold_labels = np.unique(fold_codes)  # a fold's SVC sees only its own labels (as SVC.fit would)
        local = np.searchsorted(fold_labels, fold_codes).astype(np.float64)
        w = _class_weight(params.get("class_weight"), fold_labels, fold_codes)
        model = _LibsvmSVC(table, params, seed).fit(idx[train], local, fold_labels, w)
        predictions[test] = model.decision_function(idx[test][:, None]).reshape(len(test), -1)
    final = _LibsvmSVC(table, params, seed).fit(idx, codes, classes, weights)
    if len(classes) == 2:
        from sklearn.calibration import _sigmoid_calibration

        # _fit_calibrator's two-class case: one sigmoid on the positive class's indicator
        a, b = _sigmoid_calibration(predictions[:, 0], (y == classes[1]).astype(np.int64))
        return _BinaryPlatt(final, a, b, classes)
    from sklearn.calibration import _fit_calibrator
    from sklearn.utils._array_api import get_namespace

    return _fit_calibrator(final, predictions, y, classes, "sigmoid", get_namespace(predictions)[0])


# --------------------------------------------------------------------------- the registry's estimator


class PlattSVC(ExplicitParams):
    """RBF SVC with Platt-scaled probabilities, as ``SVC(probability=True)`` computed them.

    scikit-learn 1.9 deprecates ``SVC(probability=True)`` in favour of
    ``CalibratedClassifierCV(SVC(), ensemble=False)``; this estimator is that,
    with the SVC settings at the top level and a seeded stratified 5-fold
    split (fewer folds when a class has fewer than 5 rows). With the RBF
    kernel, the kernel is computed here (each value a
    function of its two rows only, so a block's fits reproduce this model
    exactly) and the SVCs are fitted on it precomputed; other kernels are
    libsvm's own.
    """

    def __init__(self, C=1.0, kernel="rbf", gamma="scale", degree=3, coef0=0.0, tol=1e-3,
                 class_weight=None, cv=5, random_state=None):
        self.C, self.kernel, self.gamma, self.degree, self.coef0 = C, kernel, gamma, degree, coef0
        self.tol, self.class_weight, self.cv, self.random_state = tol, class_weight, cv, random_state

    _PARAMS = ("C", "kernel", "gamma", "degree", "coef0", "tol", "class_weight", "cv", "random_state")

    def fit(self, X, y):
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import SVC
        from sklearn.utils import check_array

        folds = platt_folds(y, self.cv, self.random_state)
        if self.kernel != "rbf":
            svc = SVC(C=self.C, kernel=self.kernel, gamma=self.gamma, degree=self.degree, coef0=self.coef0,
                      tol=self.tol, class_weight=self.class_weight, random_state=self.random_state)
            self.calibrated_ = CalibratedClassifierCV(svc, method="sigmoid", cv=folds, ensemble=False).fit(X, y)
            self.table_ = None
        else:
            self.table_ = DistanceTable.of(check_array(X, dtype=np.float64, order="C"))
            svc = RowSVC(self.table_, C=self.C, gamma=self.gamma, tol=self.tol, class_weight=self.class_weight,
                         random_state=self.random_state)
            rows = np.arange(len(self.table_.F))[:, None]
            self.calibrated_ = CalibratedClassifierCV(svc, method="sigmoid", cv=folds, ensemble=False).fit(rows, y)
        self.classes_ = self.calibrated_.classes_
        return self

    def _call(self, method: str, X):
        if self.table_ is None:
            return getattr(self.calibrated_, method)(X)
        from sklearn.utils import check_array

        # The fitted SVC reads kernel rows of X from a table of its training rows plus X, with
        # X's distances to its support vectors (the only ones a prediction reads).
        svc = self.calibrated_.calibrated_classifiers_[0].estimator
        support = svc.train_rows_[svc.svc_.support_]
        table, rows = self.table_.with_rows(check_array(X, dtype=np.float64, order="C"), support)
        svc.table = table
        try:
            return getattr(self.calibrated_, method)(rows[:, None])
        finally:
            svc.table = self.table_

    def predict_proba(self, X):
        return self._call("predict_proba", X)

    def predict(self, X):
        return self._call("predict", X)


# --------------------------------------------------------------------------- the block solver


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
    exact = True

    def __init__(self, params: Mapping[str, Any], n_classes: int, X_val, y_val, metric: str) -> None:
        self.params = dict(params)
        self.n_classes = int(n_classes)
        self.X_val = np.ascontiguousarray(X_val, dtype=np.float64)
        self.y_val = np.asarray(y_val)
        self.metric = metric

    def __call__(self, Xd, yd, Xz, yz, seed: int | None = None):
        Xd = np.asarray(Xd, dtype=np.float64)
        k, B = len(Xd), len(Xz)
        table = DistanceTable.of(np.vstack([Xd, np.asarray(Xz, dtype=np.float64), self.X_val]), n_train=k + B)
        val_idx = np.arange(k + B, table.F.shape[0])[:, None]
        seed = 0 if seed is None else int(seed)
        metric = METRICS[self.metric]

        def score(model) -> float:
            # predict() of the calibrated model is the argmax of these probabilities
            return float(metric.from_proba(full_proba(_Proba(model, val_idx), None, self.n_classes), self.y_val))

        base_idx = np.arange(k)
        y_all = np.concatenate([np.asarray(yd), np.asarray(yz)])
        u_with = np.empty(B)
        # Inputs built here are valid by construction: skip scikit-learn's parameter and
        # finiteness checks (signature inspection on every call), which change no result.
        folds: dict[bytes, list] = {}  # D ∪ {z} with z of the same class: the same folds

        def fit(idx):
            y = y_all[idx]
            key = y.tobytes()
            if key not in folds:
                folds[key] = list(platt_folds(y, self.params.get("cv", 5), seed).split(idx[:, None], y))
            return fit_platt_rows(table, idx, y, self.params, seed, folds[key])

        with config_context(skip_parameter_validation=True, assume_finite=True):
            base = fit(base_idx)
            u_base = score(base)
            for j in range(B):
                u_with[j] = score(fit(np.append(base_idx, k + j)))

        def predict_base(X):
            """The base model's probabilities on rows X (distances to D computed here)."""
            est = base.estimator
            local, rows = DistanceTable(table.F[:k], table.S[:k, :k]).with_rows(X)
            est.table, saved = local, est.table
            try:
                return full_proba(_Proba(base, rows[:, None]), None, self.n_classes)
            finally:
                est.table = saved

        return BlockFit(u_base=u_base, u_with=u_with, converged=np.ones(B, dtype=bool), method=self.method,
                        predict_base=predict_base)


class _Proba:
    """Adapts a fitted calibrated model to :func:`full_proba` (``predict_proba(ignored)``)."""

    def __init__(self, model, idx) -> None:
        self.model, self.idx, self.classes_ = model, idx, model.classes

    def predict_proba(self, _):
        return self.model.predict_proba(self.idx)


def build(params: Mapping[str, Any], task: str, n_classes: int, X_val, y_val, metric: str, device=None):
    """The block solver when the settings are ones it reproduces exactly, else None (:class:`~.base.SolverBuilder`)."""
    if task != "classification" or set(params) - HONOURED or params.get("kernel", "rbf") != "rbf":
        return None
    return SVMBlockSolver(params, n_classes, X_val, y_val, metric)
