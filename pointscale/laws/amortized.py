"""Amortized estimation: one model that predicts every point's scaling law.

With 10–30 noisy samples per point, per-point fits are poor. The amortized
estimator (SPEC §3) is one model ``(x, y) -> (c, α, σ, β)`` trained on the
Gaussian likelihood of *all* points' samples together, so similar points
share strength, and it predicts laws for points that have no samples yet.

The learner
-----------
Default ``learner="mlp"``: a small numpy MLP (128-128 like the paper's, but
tanh), one output head per class selected by the label (the label is also an
input), the target as an input for regression; inputs standardised and
clipped to ±5. Trained with Adam on minibatches of points: a point's gradient
is the sum of its samples' likelihood gradients. The likelihood, its
parametrisation (deltas scaled by one global RMS, sizes centred at their
geometric mean) and the treatment of the sign of c (a latent sign per point
with a learned prior ``P(c > 0 | x, y)``: the soft version of the paper's
"better sign plus sign classifier") are in
:mod:`pointscale.laws._amortized_core`.

``learner="xgboost"``: gradient-boosted trees, one row per point, with the
summed per-point gradient and Fisher curvature as a custom multi-output
objective. It learns the sign well but the exponents worse; it is kept as an
alternative (and for ``device="cuda"`` users), see ``benchmarks/amortized.py``
for measurements.

Model selection
---------------
A fraction of the points that have samples (chosen by a hash of their id and
the seed, so independent of row order) is held out with all its samples;
the units (RMS of Δ, reference k) come from the other points only. Training
stops when the mean NLL per sample of the held-out points' samples stops
improving (the MLP halves its learning rate three times first; the trees use
early stopping), and the best iterate is kept. Everything is deterministic
for a given ``random_state`` and ``n_jobs``.

What it does not give
---------------------
Intervals: the laws are point predictions (``alpha_low`` etc. are None and
``meta["intervals"]`` says so). The noise level σ, β is modelled as well,
but is learned deliberately slowly and is the least accurate part.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_array, check_is_fitted

from ..errors import ConfigError, DataError
from ..io import atomic_write_bytes, atomic_write_json, read_json
from ..seeding import STREAM_AMORTIZED, point_keys, rng
from . import _amortized_core as core
from .result import FittedScalingLaws

__all__ = ["AmortizedScalingLaws", "MAX_TRAIN_POINTS", "training_points", "training_sample"]

#: Points the amortized estimator trains on at most. Training costs epochs x
#: points while the function it learns, (x, y) -> law, stops improving long
#: before 10^5 points; beyond the budget a seeded subsample of the sampled
#: points trains it, and it still predicts every point (linear, cheap).
MAX_TRAIN_POINTS = 100_000


def training_points(samples: pd.DataFrame, seed: int, max_points: int | None = MAX_TRAIN_POINTS
                    ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """The sampled points that train the amortized estimator, and their samples.

    Returns ``(sampled, train, train_samples)``: every sampled point id
    (sorted), those that train the model (all of them up to ``max_points``,
    else a seeded subsample of that many, sorted; None: no budget), and the
    samples of the training points. The one budget rule of the amortized
    stage and of the amortized candidate of ``fit_laws(method="auto")``.
    """
    sampled = np.unique(samples["point_id"].to_numpy(dtype=object))
    train = training_sample(sampled, seed, max_points)
    if train.size == sampled.size:
        return sampled, sampled, samples
    return sampled, train, samples.loc[samples["point_id"].isin(train)]


def training_sample(sampled: np.ndarray, seed: int, max_points: int | None = MAX_TRAIN_POINTS) -> np.ndarray:
    """The points of ``sampled`` (sorted unique ids) that train the model: all up to ``max_points``, else a seeded sample.

    The rule of :func:`training_points` on the ids alone, so a caller that
    reads the samples partition by partition picks the same points.
    """
    if max_points is None or sampled.size <= int(max_points):
        return sampled
    pick = rng(int(seed), STREAM_AMORTIZED, "train-budget").choice(sampled.size, int(max_points), replace=False)
    return sampled[np.sort(pick)]

_FORMAT_VERSION = 2
#: Candidate weights of the α prior and hidden layers for the "auto" settings.
ALPHA_PRIOR_GRID = (0.0, 0.1, 1.0)
HIDDEN_GRID = ((32, 32), (128, 128))
_E2 = float(np.exp(2.0))
_TASKS = ("auto", "classification", "regression", "none")
_LEARNERS = ("mlp", "xgboost")
# Learning-speed multipliers of the MLP's outputs (level, alpha, log_tau, beta,
# sign logit). The noise outputs learn 10x slower: they overfit first, and a
# too-confident noise level at large k dominates the held-out likelihood. The
# sign logit learns 10x faster: sign boundaries must be sharp (measured on the
# synthetic benchmark: ratio of squared error to MLE at k=1000 went 2.5 -> 0.3).
_MLP_OUT_SCALE = (1.0, 1.0, 0.1, 0.1, 10.0)
_SIGN_UNCERTAIN = (0.1, 0.9)
# Standardised inputs are clipped: a one-hot column of a rare category
# standardises to ~60 (adult), which saturates every tanh unit it feeds.
_Z_CLIP = 5.0


def _is_auto(value: Any) -> bool:
    return isinstance(value, str) and value == "auto"


def oob_features(oob: pd.DataFrame | None, point_ids: np.ndarray, means: np.ndarray | None = None
                 ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Model inputs from out-of-bag evidence (:func:`pointscale.sampling.oob_evidence`).

    Per point: the mean score of its own label by models trained without it,
    the share of those models that predicted it correctly, log(1 + n_oob),
    and the mean score in each size bucket (the overall mean where a bucket
    is empty). Points without evidence get the population means -- ``means``
    (the training points', which :meth:`AmortizedScalingLaws.fit` keeps, so
    a point's prediction does not depend on the other points predicted with
    it), else those of ``point_ids`` -- and an indicator column.
    Returns the inputs, their names and the means used.
    """
    if oob is None:
        return np.zeros((len(point_ids), 0)), [], np.zeros(0)
    frame = oob.set_index("point_id") if "point_id" in oob.columns else oob
    frame = frame.reindex(np.asarray(point_ids, dtype=object))
    buckets = sorted(c for c in frame.columns if c.startswith("oob_score_b"))
    cols = ["oob_score", "oob_correct"] + buckets
    F = frame[cols].to_numpy(dtype=np.float64)
    n = frame["n_oob"].fillna(0).to_numpy(dtype=np.float64)
    for j in range(2, F.shape[1]):
        F[:, j] = np.where(np.isfinite(F[:, j]), F[:, j], F[:, 0])
    missing = ~np.isfinite(F).all(axis=1) | (n == 0)
    if means is None:
        means = np.nanmean(np.where(missing[:, None], np.nan, F), axis=0) if (~missing).any() else np.zeros(F.shape[1])
    F = np.where(missing[:, None] | ~np.isfinite(F), means[None, :], F)
    F = np.column_stack([F, np.log1p(n), missing.astype(np.float64)])
    return F, cols + ["log1p_n_oob", "no_oob"], means


def _as_ids(point_ids: Any, n: int, what: str) -> np.ndarray:
    ids = np.asarray(point_ids if point_ids is not None else np.arange(n))
    if ids.ndim != 1 or ids.shape[0] != n:
        raise DataError(f"{what}: point_ids has shape {ids.shape}; expected ({n},) like the rows of X")
    if ids.dtype.kind in "US":
        ids = ids.astype(object)
    if pd.Index(ids).has_duplicates:
        dup = pd.Index(ids)[pd.Index(ids).duplicated()][:3].tolist()
        raise DataError(f"{what}: point_ids are not unique, e.g. {dup}")
    return ids


class AmortizedScalingLaws(BaseEstimator):
    """One model predicting every point's law ψ_k ≈ c·k^(−α) from (x, y).

    Parameters
    ----------
    task : {"auto", "classification", "regression", "none"}, default="auto"
        How ``y`` enters. Classification: the label selects an output head
        and is one-hot encoded as an input. Regression: the standardised
        target is an input. "none": ``y`` is ignored. "auto" uses
        :func:`sklearn.utils.multiclass.type_of_target` (binary/multiclass
        -> classification, continuous -> regression).
    learner : {"mlp", "xgboost"}, default="mlp"
        The function class (see the module docstring).
    hidden_layer_sizes : tuple of int or "auto", default="auto"
        MLP only. Hidden layers (tanh). "auto" tries each of
        :data:`HIDDEN_GRID` and keeps the one with the best held-out-point
        likelihood.
    learning_rate : float or None, default=None
        Adam step (MLP, default 1e-3) or shrinkage (XGBoost, default 0.1).
    batch_size : int or None, default=None
        MLP only. Points per minibatch; None means a tenth of the training
        points clipped to [32, 256], or a fortieth when that is larger (so an
        epoch is 10 to 40 steps).
    max_iter : int or None, default=None
        Epochs (MLP, default 500) or boosting rounds (XGBoost, default 2000)
        at most; the epoch (round) used is chosen by the held-out points'
        likelihood (early stopping).
    n_iter_no_change : int, default=10
        Epochs (MLP) or rounds (XGBoost, x3) without an improvement of the
        held-out NLL by ``tol`` before the MLP halves its learning rate (twice)
        and then stops, or the trees stop.
    tol : float, default=1e-4
        Minimum improvement of the held-out mean NLL per sample.
    validation_fraction : float, default=0.2
        Fraction of the points with samples held out for model selection.
    max_depth : int, default=4
        XGBoost only. Depth of each tree.
    sign_model : {"mixture", "signed"}, default="mixture"
        How the sign of c is learned (see :mod:`._amortized_core`).
    alpha_range, beta_range : tuple of float, default=(0, e²)
        Bounds of α and β (the paper's α, β ≤ e²).
    alpha_prior : float or "auto", default="auto"
        Weight λ of a per-point penalty λ·(α − 1)² added to the training loss
        (not to the held-out metric), like the paper's (tinier) prior: it
        keeps poorly determined points from steep laws with a huge c. "auto"
        tries each of :data:`ALPHA_PRIOR_GRID` and keeps the weight whose
        model has the lowest NLL on the held-out points' samples -- chosen on
        the data being fitted, never by accuracy on an evaluation set. (An
        earlier fixed λ = 1 had been chosen by accuracy on breast_cancer and
        imposed α ≈ 1 by construction; its α are not the data's.)
    random_state : int or None, default=0
        Seed of the split, initial weights and minibatch order. None draws
        fresh entropy (recorded in ``seed_``).
    n_jobs : int or None, default=None
        Threads for BLAS / XGBoost; None means 1 (the MLP's matrices are
        small, one thread is fastest and results do not depend on it).
    verbose : int, default=0
        Print the held-out NLL per epoch / round.

    Attributes
    ----------
    task_ : str
    classes_ : ndarray or None
        Class labels (classification).
    n_features_in_ : int
    k0_ : float
        Reference size (geometric mean of the training sizes).
    delta_scale_ : float
        RMS of the training deltas (the unit of the learner's outputs).
    k_range_ : tuple of int
        Smallest and largest training size.
    best_iteration_ : int
        Epochs / rounds of the selected model.
    validation_curve_ : list of float
        Held-out mean NLL per sample after each epoch / round.
    validation_nll_ : float
        Its minimum (the selected model).
    loss_curve_ : list of float
        Training mean NLL per sample per epoch / round (normalised units).
    train_point_ids_ : ndarray
        Points that had usable samples, with ``train_n_samples_`` their counts.
    validation_point_ids_ : ndarray
        The held-out points among them (all their samples held out).
    fit_meta_ : dict
        Counts (rows dropped, points held out) and the fit's wall time.
    alpha_prior_, hidden_layer_sizes_ :
        The settings used (chosen by held-out-point likelihood when "auto").
    selection_ : list of dict
        Every setting tried with its held-out NLL and early-stopped epoch.
    oob_features_ : list of str
        Names of the out-of-bag inputs (empty when fitted without ``oob``).
    oob_means_ : ndarray
        The training points' mean out-of-bag inputs: what a point without
        evidence gets at prediction.
    seed_ : int
    """

    def __init__(self, *, task="auto", learner="mlp", hidden_layer_sizes="auto",
                 learning_rate=None, batch_size=None, max_iter=None, n_iter_no_change=10,
                 tol=1e-4, validation_fraction=0.2, max_depth=4, sign_model="mixture",
                 alpha_range=(0.0, _E2), beta_range=(0.0, _E2), alpha_prior="auto", random_state=0,
                 n_jobs=None, verbose=0):
        self.task = task
        self.learner = learner
        self.hidden_layer_sizes = hidden_layer_sizes
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.validation_fraction = validation_fraction
        self.max_depth = max_depth
        self.sign_model = sign_model
        self.alpha_range = alpha_range
        self.beta_range = beta_range
        self.alpha_prior = alpha_prior
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    # ------------------------------------------------------------ validation
    def _check_params(self) -> None:
        if self.task not in _TASKS:
            raise ConfigError(f"task={self.task!r} must be one of {_TASKS}")
        if self.learner not in _LEARNERS:
            raise ConfigError(f"learner={self.learner!r} must be one of {_LEARNERS}")
        if self.sign_model not in core.SIGN_MODELS:
            raise ConfigError(f"sign_model={self.sign_model!r} must be one of {core.SIGN_MODELS}")
        if not 0.0 < float(self.validation_fraction) < 1.0:
            raise ConfigError(f"validation_fraction={self.validation_fraction} must lie in (0, 1)")
        for name in ("alpha_range", "beta_range"):
            lo, hi = (float(v) for v in getattr(self, name))
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be (low, high) with low < high")
        if not _is_auto(self.hidden_layer_sizes):
            sizes = tuple(int(h) for h in self.hidden_layer_sizes)
            if not sizes or min(sizes) < 1:
                raise ConfigError(f"hidden_layer_sizes={self.hidden_layer_sizes!r} must be positive ints or 'auto'")
        for name in ("n_iter_no_change", "max_depth"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("max_iter", "batch_size"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ConfigError(f"{name}={v} must be >= 1 or None")
        if self.learning_rate is not None and not float(self.learning_rate) > 0:
            raise ConfigError(f"learning_rate={self.learning_rate} must be > 0 or None")
        if not float(self.tol) >= 0:
            raise ConfigError(f"tol={self.tol} must be >= 0")
        if not _is_auto(self.alpha_prior) and not float(self.alpha_prior) >= 0:
            raise ConfigError(f"alpha_prior={self.alpha_prior} must be >= 0 or 'auto'")

    def _link(self) -> core.Link:
        return core.Link(tuple(float(v) for v in self.alpha_range),
                         tuple(float(v) for v in self.beta_range), self.sign_model)

    def _threads(self) -> int:
        return 1 if self.n_jobs is None else max(1, int(self.n_jobs))

    def _resolve_task(self, y) -> str:
        if self.task != "auto":
            if self.task != "none" and y is None:
                raise DataError(f"task={self.task!r} needs y")
            return self.task
        if y is None:
            return "none"
        kind = type_of_target(np.asarray(y))
        if kind in ("binary", "multiclass"):
            return "classification"
        if kind == "continuous":
            return "regression"
        raise DataError(f"cannot tell the task from y (type_of_target says {kind!r}); set task=")

    # -------------------------------------------------------------- features
    def _inputs(self, X, y, what: str):
        """Network inputs Z, head index per row, and tree features F."""
        X = check_array(X, dtype=np.float64, ensure_all_finite=True, input_name="X")
        if X.shape[1] != self.n_features_in_:
            raise DataError(f"{what}: X has {X.shape[1]} features; the model was fitted with "
                            f"{self.n_features_in_}")
        n = X.shape[0]
        Zx = np.clip((X - self.x_mean_) / self.x_scale_, -_Z_CLIP, _Z_CLIP)
        head = np.zeros(n, dtype=np.int64)
        if self.task_ == "classification":
            if y is None:
                raise DataError(f"{what}: y (the labels) is required for a classification model")
            y = np.asarray(y)
            if y.shape != (n,):
                raise DataError(f"{what}: y has shape {y.shape}; expected ({n},)")
            index = pd.Index(self.classes_)
            head = index.get_indexer(y)
            if (head < 0).any():
                unknown = pd.unique(y[head < 0])[:5].tolist()
                raise DataError(f"{what}: label(s) {unknown} were not seen in fit "
                                f"(classes {self.classes_.tolist()})")
            onehot = np.eye(len(self.classes_))[head]
            return np.hstack([Zx, onehot]), head, np.hstack([X, onehot])
        if self.task_ == "regression":
            if y is None:
                raise DataError(f"{what}: y (the target) is required for a regression model")
            t = np.asarray(y, dtype=np.float64)
            if t.shape != (n,) or not np.all(np.isfinite(t)):
                raise DataError(f"{what}: y must be {n} finite numbers")
            tz = ((t - self.y_mean_) / self.y_scale_)[:, None]
            return np.hstack([Zx, tz]), head, np.hstack([X, t[:, None]])
        return Zx, head, X

    # ------------------------------------------------------------------- fit
    def fit(self, X, y, samples: pd.DataFrame, point_ids=None, oob: pd.DataFrame | None = None
            ) -> "AmortizedScalingLaws":
        """Train on the samples of the points whose features are ``X``.

        Parameters
        ----------
        X : array-like of shape (n, d)
            Preprocessed features of the points.
        y : array-like of shape (n,) or None
            Labels (classification) or targets (regression).
        samples : DataFrame
            Columns ``point_id``, ``k``, ``delta`` and optionally ``failed``.
            Failed rows and non-finite deltas are dropped and counted.
        point_ids : array-like of shape (n,), default=None
            Identity of each row of ``X``; None means 0..n-1. Points without
            samples are allowed (they carry no information for training).
        oob : DataFrame, optional
            Out-of-bag evidence per point (:func:`pointscale.sampling.oob_evidence`);
            its summaries (:func:`oob_features`) become inputs, and
            :meth:`predict_laws` then needs it too.

        Returns
        -------
        self

        Raises
        ------
        DataError
            If samples name unknown points, no delta varies, or fewer than
            10 points have samples.
        ConfigError
            If a parameter is invalid.
        """
        from .mle import prepare_samples

        start = time.perf_counter()
        self._check_params()
        X = check_array(X, dtype=np.float64, ensure_all_finite=True, input_name="X")
        n = X.shape[0]
        ids = _as_ids(point_ids, n, "fit")
        F_oob, self.oob_features_, self.oob_means_ = oob_features(oob, ids)
        X = np.hstack([X, F_oob])
        self.task_ = self._resolve_task(y)
        self.n_features_in_ = X.shape[1]
        self.x_mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        self.x_scale_ = np.where(scale > 0, scale, 1.0)
        self.classes_ = None
        self.y_mean_, self.y_scale_ = 0.0, 1.0
        if self.task_ == "classification":
            self.classes_ = np.unique(np.asarray(y))
        elif self.task_ == "regression":
            t = np.asarray(y, dtype=np.float64)
            self.y_mean_ = float(np.mean(t))
            self.y_scale_ = float(np.std(t)) or 1.0
        Z, head, F = self._inputs(X, y, "fit")

        s_ids, codes, k, delta, counts = prepare_samples(samples)
        rows_of = pd.Index(ids).get_indexer(s_ids)
        if (rows_of < 0).any():
            unknown = s_ids[rows_of < 0]
            raise DataError(f"{unknown.size} point id(s) in samples are not in point_ids, "
                            f"e.g. {unknown[:3].tolist()}")
        row = rows_of[codes]
        n_per_row = np.bincount(row, minlength=n)
        has = np.flatnonzero(n_per_row > 0)
        if has.size < 10:
            raise DataError(f"only {has.size} point(s) have usable samples; the amortized "
                            "estimator needs at least 10 (some are held out)")
        self.seed_ = (int(np.random.SeedSequence().entropy % (1 << 63))
                      if self.random_state is None else int(self.random_state))
        # Held-out points by a keyed hash of their ids: the split does not depend on row order.
        keys = point_keys(ids[has], self.seed_)
        order = has[np.argsort(keys, kind="stable")]
        n_val = max(1, int(round(float(self.validation_fraction) * has.size)))
        val, trn = order[:n_val], order[n_val:]
        # Units from the training points' samples only: nothing of the held-out
        # points reaches training.
        in_train = np.zeros(n, dtype=bool)
        in_train[trn] = True
        self.k0_, self.delta_scale_ = core.normalisation(k[in_train[row]], delta[in_train[row]])
        self.k_range_ = (int(np.floor(k.min())), int(np.ceil(k.max())))
        packed = core.pack(row, k, delta, n, self.k0_, self.delta_scale_)
        p_tr, p_va = packed.subset(trn), packed.subset(val)
        link = self._link()
        self.u0_ = core.global_init(p_tr, link)

        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self._threads(), user_api="blas"):
            if self.learner == "mlp":
                self._fit_mlp(Z, head, trn, val, p_tr, p_va, link)
            else:
                self._fit_xgb(F, trn, val, p_tr, p_va, link)
        self.validation_nll_ = float(np.min(self.validation_curve_))
        self.train_point_ids_ = ids[has]
        self.validation_point_ids_ = ids[val]
        self.train_n_samples_ = n_per_row[has].astype(np.int64)
        self.fit_meta_ = {
            **counts,
            "n_samples_used": int(k.size),
            "n_points": int(n),
            "n_points_with_samples": int(has.size),
            "n_points_held_out": int(val.size),
            "n_samples_held_out": int(p_va.n_samples),
            "seconds": round(time.perf_counter() - start, 3),
        }
        return self

    def _fit_mlp(self, Z, head, trn, val, p_tr, p_va, link) -> None:
        from . import _amortized_mlp as mlp

        n_heads = len(self.classes_) if self.task_ == "classification" else 1
        # At least ~10 steps per epoch on small problems, at most ~40 on large ones.
        bs = self.batch_size or max(min(max(trn.size // 10, 32), 256), int(np.ceil(trn.size / 40)))
        lr = float(self.learning_rate or 1e-3)
        out_scale = np.asarray(_MLP_OUT_SCALE[: link.n_outputs])
        hiddens = HIDDEN_GRID if _is_auto(self.hidden_layer_sizes) else (tuple(self.hidden_layer_sizes),)
        priors = ALPHA_PRIOR_GRID if _is_auto(self.alpha_prior) else (float(self.alpha_prior),)
        # Every setting is trained from the same seed on the same points and
        # judged by the same held-out points' likelihood (the early-stopping
        # metric, which never includes the prior).
        best = None
        grid = []
        for hidden in hiddens:
            for prior in priors:
                net, epoch, curve, train_curve = mlp.train(
                    Z[trn], head[trn], p_tr, Z[val], head[val], p_va, link, self.u0_,
                    n_heads=n_heads, hidden=tuple(int(h) for h in hidden),
                    max_epochs=int(self.max_iter or 500), learning_rate=lr, batch_size=int(bs),
                    n_iter_no_change=int(self.n_iter_no_change), tol=float(self.tol),
                    rng=rng(self.seed_, STREAM_AMORTIZED, "mlp"), out_scale=out_scale,
                    alpha_prior=float(prior), verbose=self.verbose,
                )
                score = float(np.min(curve))
                grid.append({"hidden_layer_sizes": [int(h) for h in hidden], "alpha_prior": float(prior),
                             "heldout_nll": score, "epochs": int(epoch)})
                if best is None or score < best[0]:
                    best = (score, net, epoch, curve, train_curve, hidden, prior)
        _, net, epoch, curve, train_curve, hidden, prior = best
        self.model_ = net
        self.best_iteration_ = int(epoch)
        self.validation_curve_ = [float(v) for v in curve]
        self.loss_curve_ = [float(v) for v in train_curve]
        self.hidden_layer_sizes_ = tuple(int(h) for h in hidden)
        self.alpha_prior_ = float(prior)
        self.selection_ = grid

    def _fit_xgb(self, F, trn, val, p_tr, p_va, link) -> None:
        from . import _amortized_xgb as xgbl

        # One setting only (boosting is slower to train than the MLP): the
        # prior weight defaults to 0.1 for trees; rounds are early-stopped.
        self.alpha_prior_ = 0.1 if _is_auto(self.alpha_prior) else float(self.alpha_prior)
        self.hidden_layer_sizes_ = ()
        self.selection_ = []

        booster, best, curve, train_curve = xgbl.train(
            F[trn], p_tr, F[val], p_va, link, self.u0_,
            n_rounds=int(self.max_iter or 2000), learning_rate=float(self.learning_rate or 0.1),
            max_depth=int(self.max_depth), reg_lambda=1.0, min_child_weight=1.0,
            n_iter_no_change=3 * int(self.n_iter_no_change), seed=self.seed_ % (1 << 31),
            nthread=self._threads(), alpha_prior=self.alpha_prior_, verbose=self.verbose,
        )
        self.model_ = booster
        self.best_iteration_ = int(best)
        self.validation_curve_ = [float(v) for v in curve]
        self.loss_curve_ = [float(v) for v in train_curve]

    # --------------------------------------------------------------- predict
    def _raw(self, X, y, what: str, ids=None, oob=None) -> np.ndarray:
        check_is_fitted(self, "model_")
        if self.oob_features_:
            if oob is None:
                raise DataError(f"{what}: the model was fitted with out-of-bag evidence; pass oob=")
            X = np.hstack([check_array(X, dtype=np.float64, ensure_all_finite=True, input_name="X"),
                           oob_features(oob, ids, self.oob_means_)[0]])
        Z, head, F = self._inputs(X, y, what)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self._threads(), user_api="blas"):
            if self.learner == "mlp":
                from . import _amortized_mlp as mlp

                return mlp.predict(self.model_, Z, head)
            from . import _amortized_xgb as xgbl

            return xgbl.predict(self.model_, F, self.u0_, self.best_iteration_, self._threads())

    def predict_laws(self, X, y=None, point_ids=None, samples: pd.DataFrame | None = None,
                     oob: pd.DataFrame | None = None) -> FittedScalingLaws:
        """The predicted law of every row of ``X`` (with or without samples).

        Parameters
        ----------
        X : array-like of shape (n, d)
        y : array-like of shape (n,) or None
            Labels / targets, as in :meth:`fit` (required unless task is "none").
        point_ids : array-like of shape (n,), default=None
            Identities; None means 0..n-1.
        samples : DataFrame, optional
            Samples of these points. If given, ``n_samples`` and ``nll`` (the
            mean Gaussian NLL of each point's samples under its predicted law)
            are computed from them; otherwise ``n_samples`` is the number of
            training samples of each point (0 for points not seen in fit) and
            ``nll`` is NaN.

        Returns
        -------
        FittedScalingLaws
            ``estimator="amortized"``, no intervals. Flags: ``no_samples``,
            ``sign_uncertain`` (mixture sign model: 0.1 < P(c < 0) < 0.9),
            ``alpha_at_bound``. Extra: ``prob_negative_c`` (mixture only).
        """
        n = np.asarray(X).shape[0] if hasattr(X, "shape") else len(X)
        ids = _as_ids(point_ids, n, "predict_laws")
        u = self._raw(X, y, "predict_laws", ids, oob)
        link = self._link()
        laws = link.laws(u, self.k0_, self.delta_scale_)
        nll = np.full(n, np.nan)
        if samples is not None:
            from .likelihood import mean_nll_by_point
            from .mle import prepare_samples

            s_ids, codes, k, delta, _ = prepare_samples(samples)
            rows_of = pd.Index(ids).get_indexer(s_ids)
            keep = rows_of[codes] >= 0
            row = rows_of[codes][keep]
            n_samples = np.bincount(row, minlength=n)
            nll = mean_nll_by_point(row, k[keep], delta[keep], laws["c"], laws["alpha"],
                                    laws["sigma"], laws["beta"], n_points=n)
            nll = np.where(n_samples > 0, nll, np.nan)
        else:
            pos = pd.Index(self.train_point_ids_).get_indexer(ids)
            n_samples = np.where(pos >= 0, self.train_n_samples_[np.maximum(pos, 0)], 0)
        lo, hi = link.alpha_range
        span = hi - lo
        flags = {
            "no_samples": n_samples == 0,
            "alpha_at_bound": (laws["alpha"] < lo + 1e-3 * span) | (laws["alpha"] > hi - 1e-3 * span),
        }
        extra = {}
        if self.sign_model == "mixture":
            p = laws["prob_negative_c"]
            flags["sign_uncertain"] = (p > _SIGN_UNCERTAIN[0]) & (p < _SIGN_UNCERTAIN[1])
            extra["prob_negative_c"] = p
        meta = {
            "intervals": "none: the amortized estimator gives point predictions only",
            "learner": self.learner,
            "task": self.task_,
            "params": _jsonable_params(self.get_params()),
            "k0": self.k0_,
            "delta_scale": self.delta_scale_,
            "best_iteration": self.best_iteration_,
            "alpha_prior": self.alpha_prior_,
            "hidden_layer_sizes": list(self.hidden_layer_sizes_),
            "hyperparameter_selection": list(self.selection_),
            "oob_features": list(self.oob_features_),
            "validation_nll_normalised": self.validation_nll_,
            "seed": self.seed_,
            "fit": dict(self.fit_meta_),
        }
        return FittedScalingLaws(
            point_ids=ids, c=laws["c"], alpha=laws["alpha"], sigma=laws["sigma"],
            beta=laws["beta"], nll=nll, n_samples=n_samples, estimator="amortized",
            flags=flags, extra=extra, k_range=self.k_range_, meta=meta,
        )

    # ----------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to the folder ``path`` (created if needed).

        ``amortized.json`` holds the parameters and fitted state; the learner's
        weights go in its own portable format: ``mlp.npz`` (plain arrays, no
        pickle) or ``xgboost.json`` (XGBoost's JSON model). Writes are atomic.
        """
        check_is_fitted(self, "model_")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.learner == "mlp":
            buf = io.BytesIO()
            arrays = {f"w{i}": w for i, w in enumerate(self.model_.weights)}
            np.savez(buf, out_scale=self.model_.out_scale, **arrays)
            atomic_write_bytes(path / "mlp.npz", buf.getvalue())
            learner_state = {"n_heads": self.model_.n_heads, "activation": self.model_.activation,
                             "n_arrays": len(self.model_.weights)}
        else:
            from ._amortized_xgb import to_bytes

            atomic_write_bytes(path / "xgboost.json", to_bytes(self.model_))
            learner_state = {}
        state = {
            "task_": self.task_,
            "classes_": None if self.classes_ is None else self.classes_.tolist(),
            "n_features_in_": self.n_features_in_,
            "x_mean_": self.x_mean_.tolist(),
            "x_scale_": self.x_scale_.tolist(),
            "y_mean_": self.y_mean_,
            "y_scale_": self.y_scale_,
            "k0_": self.k0_,
            "delta_scale_": self.delta_scale_,
            "k_range_": list(self.k_range_),
            "u0_": self.u0_.tolist(),
            "best_iteration_": self.best_iteration_,
            "validation_curve_": self.validation_curve_,
            "validation_nll_": self.validation_nll_,
            "loss_curve_": self.loss_curve_,
            "train_point_ids_": self.train_point_ids_.tolist(),
            "train_n_samples_": self.train_n_samples_.tolist(),
            "validation_point_ids_": self.validation_point_ids_.tolist(),
            "fit_meta_": self.fit_meta_,
            "seed_": self.seed_,
            "alpha_prior_": self.alpha_prior_,
            "hidden_layer_sizes_": list(self.hidden_layer_sizes_),
            "selection_": self.selection_,
            "oob_features_": list(self.oob_features_),
            "oob_means_": None if self.oob_means_ is None else self.oob_means_.tolist(),
        }
        doc = {"format_version": _FORMAT_VERSION, "params": _jsonable_params(self.get_params()),
               "state": state, "learner_state": learner_state}
        atomic_write_json(path / "amortized.json", doc)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "AmortizedScalingLaws":
        """Read a model written by :meth:`save`.

        Raises
        ------
        DataError
            If the folder lacks a file or was written by another format version.
        """
        path = Path(path)
        meta_path = path / "amortized.json"
        if not meta_path.exists():
            raise DataError(f"no amortized model at {path} (missing amortized.json)")
        doc = read_json(meta_path)
        if doc.get("format_version") != _FORMAT_VERSION:
            raise DataError(f"{meta_path} has format_version={doc.get('format_version')!r}; "
                            f"this pointscale reads {_FORMAT_VERSION}")
        params = dict(doc["params"])
        for name in ("hidden_layer_sizes", "alpha_range", "beta_range"):
            if not _is_auto(params[name]):
                params[name] = tuple(params[name])
        model = cls(**params)
        st = doc["state"]
        model.task_ = st["task_"]
        model.classes_ = None if st["classes_"] is None else np.asarray(st["classes_"])
        model.n_features_in_ = int(st["n_features_in_"])
        model.x_mean_ = np.asarray(st["x_mean_"], dtype=np.float64)
        model.x_scale_ = np.asarray(st["x_scale_"], dtype=np.float64)
        model.y_mean_ = float(st["y_mean_"])
        model.y_scale_ = float(st["y_scale_"])
        model.k0_ = float(st["k0_"])
        model.delta_scale_ = float(st["delta_scale_"])
        model.k_range_ = tuple(int(v) for v in st["k_range_"])
        model.u0_ = np.asarray(st["u0_"], dtype=np.float64)
        model.best_iteration_ = int(st["best_iteration_"])
        model.validation_curve_ = [float(v) for v in st["validation_curve_"]]
        model.validation_nll_ = float(st["validation_nll_"])
        model.loss_curve_ = [float(v) for v in st["loss_curve_"]]
        ids = np.empty(len(st["train_point_ids_"]), dtype=object)
        ids[:] = st["train_point_ids_"]
        model.train_point_ids_ = ids
        model.train_n_samples_ = np.asarray(st["train_n_samples_"], dtype=np.int64)
        vids = np.empty(len(st["validation_point_ids_"]), dtype=object)
        vids[:] = st["validation_point_ids_"]
        model.validation_point_ids_ = vids
        model.fit_meta_ = dict(st["fit_meta_"])
        model.seed_ = int(st["seed_"])
        model.alpha_prior_ = float(st["alpha_prior_"])
        model.hidden_layer_sizes_ = tuple(int(h) for h in st["hidden_layer_sizes_"])
        model.selection_ = list(st["selection_"])
        model.oob_features_ = list(st["oob_features_"])
        # Models saved before the means were kept impute with the predicted points' means.
        means = st.get("oob_means_")
        model.oob_means_ = None if means is None else np.asarray(means, dtype=np.float64)
        if model.learner == "mlp":
            from ._amortized_mlp import MLP

            weights_path = path / "mlp.npz"
            if not weights_path.exists():
                raise DataError(f"amortized model at {path} lacks mlp.npz")
            ls = doc["learner_state"]
            with np.load(weights_path, allow_pickle=False) as z:
                weights = [z[f"w{i}"].astype(np.float64) for i in range(int(ls["n_arrays"]))]
                out_scale = z["out_scale"]
            model.model_ = MLP(weights, int(ls["n_heads"]), ls["activation"], out_scale)
        else:
            from ._amortized_xgb import from_bytes

            booster_path = path / "xgboost.json"
            if not booster_path.exists():
                raise DataError(f"amortized model at {path} lacks xgboost.json")
            model.model_ = from_bytes(booster_path.read_bytes())
        return model


def _jsonable_params(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        if isinstance(value, tuple):
            value = [v.item() if isinstance(v, np.generic) else v for v in value]
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    json.dumps(out)  # fail here, not half-way through a save
    return out
