"""Experiments that test what the values claim (SPEC §4).

Point addition (the paper's Sec. 4.4)
-------------------------------------
Candidates are set aside from the pool; initial datasets are drawn from the
rest at two sizes, n_small and n_large, ``repeats`` times each (class-stratified
so every class is present). To each initial dataset we add m candidates chosen
four ways -- ranked by ψ at n_small, by ψ at n_large, by the distributional
Shapley value, and at random (class-balanced like the others) -- retrain and
record the change of the test score. All four rankings are applied to the
*same* initial dataset and model seed in a repeat, so the differences between
rankings are paired and their standard errors are those of paired differences.
Expected: the size-matched ranking gains most in each regime, and every
law-based ranking beats random.

The outcome is **test accuracy** for classification (negative MSE for
regression), whatever utility the values were sampled with: the paper reports
accuracy gains, and a utility-specific outcome would let a utility grade
itself. The result carries the metric's name (``settings["metric"]``, the
``metric`` column of the summary); labels are read from there.

Degenerate regimes are *refused*, with the reason, instead of reported:

* a test split under ``min_test_rows`` (500) rows: one row moves accuracy by
  more than 0.2 pp, so a gain of a few tenths of a pp is one or two rows;
* an initial size above half the non-candidate pool
  (:data:`pointscale.sampling.config.MAX_POOL_FRACTION`): initial sets then
  share most of their points (at the pool size, every repeat is the same
  set, and a deterministic model makes the repeats one trial). That regime
  is left out and its reason is in ``refused``; if both regimes are refused
  the experiment raises.

Removal curves
--------------
Drop the lowest-valued points in steps, retrain on the rest, score on the
test split; the same with the highest-valued first and at random. Good values
make the first curve stay flat or rise and the second fall fastest.

Noisy labels
------------
Flip the labels of a fraction of the valued points, sample their marginal
contributions, fit the laws, and measure by ROC AUC how well a low value
(Shapley, c, or the Monte Carlo mean) singles out the flipped points.

Failures: a fit that raises (e.g. one class only) is recorded as failed with a
NaN score and counted; it is never replaced by a default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError, DegenerateExperimentError
from ..laws.result import FittedScalingLaws
from ..seeding import STREAM_LABEL_NOISE, STREAM_MODEL, STREAM_SELECTION, int_seed, rng
from .selection import select_top
from .values import distributional_shapley, monte_carlo_values

__all__ = [
    "PointAdditionResult",
    "point_addition_experiment",
    "removal_curve",
    "noisy_label_check",
    "flip_labels",
    "outcome_metric",
    "check_test_rows",
    "MIN_TEST_ROWS",
    "RANKINGS",
]

RANKINGS = ("size_small", "size_large", "shapley", "random")


# --------------------------------------------------------------------------- models


#: Smallest test split an accuracy outcome is reported on (one row = 0.2 pp).
MIN_TEST_ROWS = 500


def outcome_metric(task: str) -> str:
    """Outcome metric of the experiments: test ``accuracy``, or ``neg_mse`` for regression.

    Not the sampling utility: every utility's values are judged by the same outcome.
    """
    return "accuracy" if task == "classification" else "neg_mse"


def check_test_rows(dataset: Any, min_test_rows: int = MIN_TEST_ROWS) -> None:
    """Raise :class:`DegenerateExperimentError` when the test split is too small to report on."""
    n_test = int(np.asarray(dataset.y_test).shape[0])
    if n_test < int(min_test_rows):
        raise DegenerateExperimentError(
            f"the test split of {dataset.name} has {n_test} rows (< {int(min_test_rows)}): one row moves "
            f"accuracy by {100 / max(n_test, 1):.2f} pp, too coarse for the gains measured here; "
            "use a dataset with a larger test split (or a --test-size of at least 500 rows)"
        )


def _fit_score(dataset: Any, index: np.ndarray, *, model: str, metric: str, seed: int,
               params: Mapping[str, Any] | None) -> float:
    """Train ``model`` on pool rows ``index`` and score it on the test split; NaN if it fails."""
    from ..sampling.metrics import utility
    from ..sampling.models import make_estimator

    X = np.asarray(dataset.X_train)[index]
    y = np.asarray(dataset.y_train)[index]
    est = make_estimator(model, dataset.task, seed, dict(params) if params else None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter; failures raise
            est.fit(X, y)
            score = utility(metric, est, np.asarray(dataset.X_test), np.asarray(dataset.y_test),
                            dataset.n_classes)
    except Exception:  # noqa: BLE001 -- a failed fit is recorded as NaN, never defaulted
        return float("nan")
    return float(score)


def _require_test_split(dataset: Any) -> None:
    """The experiments score on the test split; given splits may have none."""
    if np.asarray(dataset.X_test).shape[0] == 0:
        raise DataError(f"{dataset.name} has no test split (given splits without a test file); "
                        "rerun with --test FILE to measure outcomes")


def _stratified(gen: np.random.Generator, index: np.ndarray, y: np.ndarray | None, n: int) -> np.ndarray:
    """n rows of ``index`` without replacement; per class round(n·share), at least one each."""
    if n > index.size:
        raise ConfigError(f"cannot draw {n} rows from {index.size}")
    if y is None:
        return np.sort(gen.choice(index, size=n, replace=False))
    classes, counts = np.unique(y, return_counts=True)
    if n < classes.size:
        raise ConfigError(f"size {n} must be at least the number of classes ({classes.size})")
    want = np.maximum(1, np.round(n * counts / counts.sum()).astype(int))
    want = np.minimum(want, counts)
    # fix rounding so that the total is exactly n (largest classes absorb the difference)
    while want.sum() != n:
        order = np.argsort(-counts)
        step = 1 if want.sum() < n else -1
        for j in order:
            if want.sum() == n:
                break
            if (step > 0 and want[j] < counts[j]) or (step < 0 and want[j] > 1):
                want[j] += step
    parts = [gen.choice(index[y == c], size=w, replace=False) for c, w in zip(classes, want)]
    return np.sort(np.concatenate(parts))


# --------------------------------------------------------------------------- point addition


@dataclass(frozen=True, eq=False)
class PointAdditionResult:
    """Outcome of :func:`point_addition_experiment`.

    Attributes
    ----------
    summary : DataFrame
        Per (regime, ranking) of every regime that ran: ``metric`` (the
        outcome's name, e.g. ``accuracy``), ``n_initial``, ``m``, ``mean_gain``, ``se_gain``,
        ``mean_gain_vs_random``, ``se_gain_vs_random`` (paired), ``n_repeats``,
        ``n_failed``, ``mean_base_score``.
    trials : DataFrame
        One row per (regime, repeat, ranking): base and new score, gain.
    selections : DataFrame
        The law-based selections: ranking, n_current, point_id, predicted value, label.
    messages : tuple of str
        What was clipped or adjusted, and why.
    settings : dict
        The effective settings (after clipping), ``metric`` included.
    refused : dict
        Regime name -> why it was not run (degenerate initial sets).
    """

    summary: pd.DataFrame
    trials: pd.DataFrame
    selections: pd.DataFrame
    messages: tuple[str, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        return self.summary

    def __str__(self) -> str:
        metric = self.settings.get("metric", "score")
        unit, scale = ("pp", 100.0) if metric == "accuracy" else ("", 1.0)
        lines = [f"point addition: {dict(self.settings)}",
                 f"  outcome: change of test {metric}{' in ' + unit if unit else ''}; "
                 "'vs random' is paired by initial set (mean ± standard error)"]
        lines += [f"  note: {m}" for m in self.messages]
        lines += [f"  {regime}: refused — {why}" for regime, why in self.refused.items()]
        for _, r in self.summary.iterrows():
            lines.append(
                f"  {r['regime']:<6} n={int(r['n_initial']):<5} {r['ranking']:<11}"
                f" gain {scale * r['mean_gain']:+.3f} ± {scale * r['se_gain']:.3f}"
                f"  vs random {scale * r['mean_gain_vs_random']:+.3f} ± {scale * r['se_gain_vs_random']:.3f}"
            )
        return "\n".join(lines)


def _ids_to_index(dataset: Any, ids: Iterable[Any]) -> np.ndarray:
    return dataset.index_of(list(ids))


def point_addition_experiment(
    dataset: Any,
    laws: FittedScalingLaws,
    *,
    model: str = "logreg",
    n_small: int = 500,
    n_large: int = 5000,
    m: int = 100,
    repeats: int = 20,
    candidates: Sequence[Any] | None = None,
    n_candidates: int = 1000,
    balanced: bool = True,
    shapley_range: tuple[int, int] | None = None,
    metric: str | None = None,
    model_params: Mapping[str, Any] | None = None,
    seed: int = 0,
    min_test_rows: int = MIN_TEST_ROWS,
) -> PointAdditionResult:
    """Add m points chosen by each ranking to random initial datasets; measure the gain.

    Parameters
    ----------
    dataset : Dataset
    laws : FittedScalingLaws
        Laws of (at least) the candidates.
    model : str, default="logreg"
        A name known to :func:`pointscale.sampling.models.make_estimator`.
    n_small, n_large : int, default=500, 5000
        Initial dataset sizes of the two regimes. A regime whose size exceeds
        half the non-candidate pool is refused (see ``refused``), not clipped.
    m : int, default=100
        Points added (clipped to half the candidates, so that rankings differ).
    repeats : int, default=20
        Initial datasets per regime (the paper: 1000).
    candidates : sequence of point ids, optional
        Default: ``min(n_candidates, half the valued points)`` valued points at random.
    balanced : bool, default=True
        Class-balanced selections (classification only).
    shapley_range : (int, int), optional
        Range of the size-free Shapley ranking; default ``laws.k_range``.
    metric : str, optional
        Outcome on the test split; default :func:`outcome_metric` (accuracy
        for classification, ``neg_mse`` for regression).
    seed : int, default=0
    min_test_rows : int, default=500
        Refuse (:class:`~pointscale.errors.DegenerateExperimentError`) a test
        split with fewer rows.

    Returns
    -------
    PointAdditionResult

    Raises
    ------
    DegenerateExperimentError
        The test split is too small, or both regimes' initial sets would be
        (nearly) the same set in every repeat.
    """
    if not isinstance(laws, FittedScalingLaws):
        raise ConfigError(f"laws must be a FittedScalingLaws; got {type(laws).__name__}")
    n_small, n_large, m, repeats = int(n_small), int(n_large), int(m), int(repeats)
    if not 0 < n_small < n_large:
        raise ConfigError(f"n_small={n_small} and n_large={n_large} must satisfy 0 < n_small < n_large")
    if m < 1 or repeats < 1:
        raise ConfigError(f"m={m} and repeats={repeats} must be at least 1")
    metric = metric or outcome_metric(dataset.task)
    _require_test_split(dataset)
    check_test_rows(dataset, min_test_rows)
    classification = dataset.task == "classification"
    messages: list[str] = []

    cand_ids = _choose_candidates(dataset, laws, candidates, n_candidates, seed, messages)
    cand_laws = laws.subset(np.asarray(cand_ids, dtype=object))
    cand_idx = _ids_to_index(dataset, cand_ids)
    rest = np.setdiff1d(np.arange(dataset.n_pool), cand_idx)
    y_pool = np.asarray(dataset.y_train)
    y_rest = y_pool[rest].astype(np.int64) if classification else None
    min_size = max(2, 2 * dataset.n_classes)

    ns, nl = n_small, n_large
    refused = _refused_regimes(ns, nl, rest.size, repeats)
    if len(refused) == 2:
        raise DegenerateExperimentError(f"point addition refused: {refused['small']}")
    if ns < min_size:
        raise ConfigError(f"n_small={ns} must be at least {min_size} (two rows per class)")
    m_eff = min(m, len(cand_ids) // 2)
    if m_eff < m:
        messages.append(f"m={m} clipped to {m_eff} (half of the {len(cand_ids)} candidates)")
    if m_eff < 1:
        raise ConfigError(f"{len(cand_ids)} candidates are too few to add any")

    labels = y_pool[cand_idx] if classification and balanced else None
    if shapley_range is None:
        shapley_range = laws.k_range
    if shapley_range is None:
        shapley_range = (ns, nl)
        messages.append(f"laws carry no k_range; Shapley ranking over [{ns}, {nl}]")
    law_scores = {
        "size_small": cand_laws.predict(ns, warn_extrapolation=False)[:, 0],
        "size_large": cand_laws.predict(nl, warn_extrapolation=False)[:, 0],
        "shapley": distributional_shapley(cand_laws, *shapley_range).value,
    }
    chosen = {name: select_top(cand_ids, s, m_eff, labels=labels, balanced=balanced)
              for name, s in law_scores.items()}
    sel_rows = _selection_rows(chosen, law_scores, cand_ids, labels, {"size_small": ns, "size_large": nl})

    regimes = {r: n0 for r, n0 in (("small", ns), ("large", nl)) if r not in refused}
    rows = _addition_trials(dataset, regimes, repeats, rest, y_rest, cand_ids, cand_idx, chosen, m_eff,
                            labels=labels, balanced=balanced, model=model, metric=metric,
                            model_params=model_params, seed=seed)
    trials = pd.DataFrame(rows)
    trials["failed"] = ~np.isfinite(trials["gain"].to_numpy(dtype=np.float64))
    summary = _summarise_addition(trials, m_eff, metric)
    settings = {"model": model, "metric": metric, "n_small": ns, "n_large": nl, "m": m_eff,
                "repeats": repeats, "n_candidates": len(cand_ids), "balanced": bool(balanced),
                "shapley_range": [int(shapley_range[0]), int(shapley_range[1])], "seed": int(seed),
                "n_test": int(np.asarray(dataset.y_test).shape[0])}
    return PointAdditionResult(summary=summary, trials=trials, selections=pd.DataFrame(sel_rows),
                               messages=tuple(messages), settings=settings, refused=refused)


def _choose_candidates(dataset: Any, laws: FittedScalingLaws, candidates, n_candidates: int, seed: int,
                       messages: list[str]) -> list[Any]:
    """The candidate point ids: those given (each must have a finite law), or a seeded draw of valued points."""
    pool_pos = {p: i for i, p in enumerate(np.asarray(dataset.point_ids).tolist())}
    finite = np.isfinite(laws.c) & np.isfinite(laws.alpha)
    valued = [p for p, ok in zip(laws.point_ids.tolist(), finite) if ok and p in pool_pos]
    if candidates is None:
        n_cand = min(int(n_candidates), len(valued) // 2)
        if n_cand < 2:
            raise DataError(f"only {len(valued)} valued point(s) with a finite law; need at least 4")
        if n_cand < n_candidates:
            messages.append(
                f"candidates: {n_cand} (half of the {len(valued)} valued points) instead of {n_candidates}"
            )
        g = rng(seed, STREAM_SELECTION, "candidates")
        return [valued[i] for i in np.sort(g.choice(len(valued), size=n_cand, replace=False))]
    cand_ids = list(candidates)
    bad = [p for p in cand_ids if p not in set(valued)]
    if bad:
        raise DataError(f"{len(bad)} candidate(s) have no finite law, e.g. {bad[:3]}")
    return cand_ids


def _selection_rows(chosen: Mapping[str, np.ndarray], law_scores: Mapping[str, np.ndarray], cand_ids: list[Any],
                    labels, n_at: Mapping[str, int]) -> list[dict]:
    """One row per (ranking, selected point): its rank, predicted value and label."""
    rows = []
    for name, pos in chosen.items():
        for r, p in enumerate(pos):
            rows.append({"ranking": name, "n_current": n_at.get(name, np.nan), "rank": r + 1,
                         "point_id": cand_ids[p], "predicted_value": law_scores[name][p],
                         "label": None if labels is None else labels[p]})
    return rows


def _refused_regimes(ns: int, nl: int, n_rest: int, repeats: int) -> dict[str, str]:
    """Regimes whose initial sets would not be random (SPEC §6), with the reason."""
    from ..sampling.config import MAX_POOL_FRACTION

    limit = int(MAX_POOL_FRACTION * n_rest)
    refused: dict[str, str] = {}
    for regime, n0 in (("small", ns), ("large", nl)):
        if n0 > limit:
            refused[regime] = (
                f"initial size {n0} > {MAX_POOL_FRACTION:.0%} of the {n_rest} non-candidate pool points "
                f"({limit}): the {repeats} initial sets would share most of their points "
                f"({'all of them: every repeat the same set' if n0 >= n_rest else 'not independent'}); "
                "use fewer candidates or a smaller initial size"
            )
    return refused


def _addition_trials(dataset: Any, regimes: Mapping[str, int], repeats: int, rest: np.ndarray, y_rest,
                     cand_ids: list[Any], cand_idx: np.ndarray, chosen: Mapping[str, np.ndarray], m_eff: int,
                     *, labels, balanced: bool, model: str, metric: str, model_params, seed: int) -> list[dict]:
    """One row per (regime, repeat, ranking): the score before and after adding the ranking's points."""
    rows = []
    solver = _set_solver(dataset, model, metric, model_params)
    for regime, n0 in regimes.items():
        for r in range(repeats):
            g = rng(seed, STREAM_SELECTION, "initial", regime, r)
            base = _stratified(g, rest, y_rest, n0)
            mseed = int_seed(seed, STREAM_MODEL, "addition", regime, r)
            g_rand = rng(seed, STREAM_SELECTION, "random", regime, r)
            picks = dict(chosen)
            picks["random"] = select_top(cand_ids, g_rand.random(len(cand_ids)), m_eff,
                                         labels=labels, balanced=balanced)
            sets = [base] + [np.concatenate([base, cand_idx[picks[name]]]) for name in RANKINGS]
            scores = _set_scores(dataset, solver, sets, model=model, metric=metric, seed=mseed,
                                 params=model_params)
            for name, score in zip(RANKINGS, scores[1:]):
                rows.append({"regime": regime, "n_initial": n0, "repeat": r, "ranking": name,
                             "base_score": scores[0], "score": score, "gain": score - scores[0]})
    return rows


def _set_solver(dataset: Any, model: str, metric: str, params: Mapping[str, Any] | None):
    """The model's exact solver scored on the test split, where it can fit whole added sets; else None."""
    from ..sampling.engine import batched_solver

    solver = batched_solver(dataset, model, dict(params) if params else None, np.asarray(dataset.X_test),
                            np.asarray(dataset.y_test), metric)
    return solver if getattr(solver, "exact", False) and hasattr(solver, "scores_of_sets") else None


def _set_scores(dataset: Any, solver, sets: list[np.ndarray], *, model: str, metric: str, seed: int,
                params: Mapping[str, Any] | None) -> list[float]:
    """Test scores of the model trained on each index set (``sets[0]`` the base, the others supersets of it).

    With an exact solver (:func:`_set_solver`) the supersets start at the
    base's optimum; a fit it does not converge is refitted by the estimator.
    """
    if solver is None:
        return [_fit_score(dataset, idx, model=model, metric=metric, seed=seed, params=params) for idx in sets]
    X, y = np.asarray(dataset.X_train), np.asarray(dataset.y_train)
    base = sets[0]
    added = [(X[idx[base.size:]], y[idx[base.size:]]) for idx in sets[1:]]
    scores, ok = solver.scores_of_sets(X[base], y[base], added)
    return [float(s) if good else _fit_score(dataset, idx, model=model, metric=metric, seed=seed, params=params)
            for s, good, idx in zip(scores, ok, sets)]


def _se(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.std(x, ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")


def _summarise_addition(trials: pd.DataFrame, m: int, metric: str) -> pd.DataFrame:
    out = []
    for regime in ("small", "large"):
        t = trials[trials["regime"] == regime]
        if t.empty:  # refused
            continue
        rand = t[t["ranking"] == "random"].set_index("repeat")["gain"]
        for name in RANKINGS:
            s = t[t["ranking"] == name].set_index("repeat")
            gain = s["gain"].to_numpy(dtype=np.float64)
            diff = (s["gain"] - rand.reindex(s.index)).to_numpy(dtype=np.float64)
            out.append({
                "regime": regime,
                "metric": metric,
                "n_initial": int(s["n_initial"].iloc[0]),
                "ranking": name,
                "m": m,
                "mean_gain": float(np.nanmean(gain)) if np.isfinite(gain).any() else np.nan,
                "se_gain": _se(gain),
                "mean_gain_vs_random": float(np.nanmean(diff)) if np.isfinite(diff).any() else np.nan,
                "se_gain_vs_random": _se(diff),
                "n_repeats": int(np.isfinite(gain).sum()),
                "n_failed": int((~np.isfinite(gain)).sum()),
                "mean_base_score": float(np.nanmean(s["base_score"].to_numpy(dtype=np.float64))),
            })
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- removal


def _value_series(values: Any, value_column: str) -> pd.Series:
    if isinstance(values, pd.Series):
        return values
    if isinstance(values, pd.DataFrame):
        if value_column not in values.columns:
            raise DataError(f"values has no column {value_column!r}; have {list(values.columns)}")
        frame = values.set_index("point_id") if "point_id" in values.columns else values
        return frame[value_column]
    if hasattr(values, "to_series"):
        return values.to_series()
    raise DataError(f"values must be a Series, a values table or a ValueEstimate; got {type(values).__name__}")


def removal_curve(
    dataset: Any,
    values: Any,
    *,
    model: str = "logreg",
    fractions: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
    value_column: str = "shapley",
    repeats: int = 5,
    metric: str | None = None,
    model_params: Mapping[str, Any] | None = None,
    seed: int = 0,
    max_train: int | None = None,
) -> pd.DataFrame:
    """Test score after removing the lowest-valued (or highest-valued, or random) points.

    The model trains on the whole pool minus the removed points; only points
    with a finite value are removed (the others always stay). Every fraction
    refits the model on ~the whole pool, 7 fits per fraction, so on a large
    pool ``max_train`` bounds the cost: the curve is then computed on a seeded
    random subsample of that many pool points (removing the lowest-valued
    points *of the subsample*), and the rows say so (``n_pool_used``).

    Parameters
    ----------
    dataset : Dataset
    values : Series by point id, values table (DataFrame with ``point_id``), or ValueEstimate
    model : str, default="logreg"
    fractions : sequence of float in [0, 1)
        Fractions of the valued points removed.
    value_column : str, default="shapley"
        Column of a values table to use.
    repeats : int, default=5
        Random removals per fraction.
    metric : str, optional
        Outcome on the test split; default :func:`outcome_metric` (accuracy
        for classification, ``neg_mse`` for regression).
    seed : int, default=0
    max_train : int, optional
        Pool points the curve uses at most (None: all).

    Returns
    -------
    DataFrame
        ``strategy`` (``lowest_first``, ``highest_first``, ``random``),
        ``fraction``, ``n_removed``, ``n_train``, ``score`` (mean over repeats),
        ``se`` (NaN for the deterministic strategies), ``n_repeats``, ``n_failed``,
        ``n_pool_used`` (the pool points the curve drew from), ``metric``
        (the outcome's name) and ``n_test`` (its rows; with fewer than 500,
        one row moves accuracy by more than 0.2 pp).
    """
    metric = metric or outcome_metric(dataset.task)
    _require_test_split(dataset)
    fr = np.asarray(list(fractions), dtype=np.float64)
    if fr.size == 0 or np.any(fr < 0) or np.any(fr >= 1):
        raise ConfigError(f"fractions={list(fractions)} must be non-empty and in [0, 1)")
    vals = _value_series(values, value_column)
    vals = vals[np.isfinite(vals.to_numpy(dtype=np.float64))]
    if vals.empty:
        raise DataError("no point has a finite value; nothing to remove")
    idx = _ids_to_index(dataset, vals.index.tolist())
    v = vals.to_numpy(dtype=np.float64)
    everyone = np.arange(dataset.n_pool)
    if max_train is not None and dataset.n_pool > int(max_train):
        everyone = np.sort(rng(seed, STREAM_SELECTION, "removal-subsample").choice(
            dataset.n_pool, int(max_train), replace=False))
        inside = np.isin(idx, everyone)
        idx, v = idx[inside], v[inside]
        if idx.size == 0:
            raise DataError("no valued point falls in the removal curve's subsample; raise max_train")
    # ties broken by pool position so the curve is deterministic
    low_first = idx[np.lexsort((idx, v))]
    high_first = idx[np.lexsort((idx, -v))]
    mseed = int_seed(seed, STREAM_MODEL, "removal")
    rows = []
    for f in fr:
        k = int(round(f * idx.size))
        for name, order in (("lowest_first", low_first), ("highest_first", high_first)):
            keep = np.setdiff1d(everyone, order[:k])
            s = _fit_score(dataset, keep, model=model, metric=metric, seed=mseed, params=model_params)
            rows.append({"strategy": name, "fraction": float(f), "n_removed": k,
                         "n_train": int(keep.size), "score": s, "se": np.nan,
                         "n_repeats": int(np.isfinite(s)), "n_failed": int(not np.isfinite(s)),
                         "n_pool_used": int(everyone.size)})
        scores = []
        for r in range(int(repeats)):
            g = rng(seed, STREAM_SELECTION, "removal", r, k)
            keep = np.setdiff1d(everyone, g.choice(idx, size=k, replace=False))
            scores.append(_fit_score(dataset, keep, model=model, metric=metric, seed=mseed,
                                     params=model_params))
        sc = np.asarray(scores)
        ok = np.isfinite(sc)
        rows.append({"strategy": "random", "fraction": float(f), "n_removed": k,
                     "n_train": int(everyone.size - k),
                     "score": float(sc[ok].mean()) if ok.any() else np.nan, "se": _se(sc),
                     "n_repeats": int(ok.sum()), "n_failed": int((~ok).sum()),
                     "n_pool_used": int(everyone.size)})
    out = pd.DataFrame(rows)
    out["metric"] = metric
    out["n_test"] = int(np.asarray(dataset.y_test).shape[0])
    return out


# --------------------------------------------------------------------------- noisy labels


def flip_labels(dataset: Any, point_ids: Sequence[Any], flip_fraction: float, *, seed: int = 0):
    """A copy of ``dataset`` with the labels of round(p·n) of ``point_ids`` flipped.

    Binary labels are swapped; with more classes a flipped label becomes one
    of the other classes at random. The copy gets a new fingerprint (derived
    from the original, the seed and the flipped ids) and no storage path, so
    nothing cached for the clean data is reused for it.

    Returns
    -------
    noisy : Dataset
    flipped : ndarray of point ids
    """
    if dataset.task != "classification":
        raise ConfigError(f"label flipping needs a classification task; {dataset.name} is {dataset.task}")
    p = float(flip_fraction)
    if not 0.0 < p < 1.0:
        raise ConfigError(f"flip_fraction={flip_fraction} must lie in (0, 1)")
    ids = list(point_ids)
    n_flip = int(round(p * len(ids)))
    if n_flip < 1:
        raise ConfigError(f"flip_fraction={p} of {len(ids)} points flips none; value more points")
    g = rng(seed, STREAM_LABEL_NOISE, "flip")
    which = np.sort(g.choice(len(ids), size=n_flip, replace=False))
    flipped = np.asarray([ids[i] for i in which], dtype=object)
    idx = dataset.index_of(flipped)
    y = np.array(dataset.y_train, copy=True)
    C = dataset.n_classes
    shift = g.integers(1, C, size=n_flip) if C > 2 else np.ones(n_flip, dtype=np.int64)
    y[idx] = (y[idx].astype(np.int64) + shift) % C
    h = hashlib.sha256(f"{dataset.fingerprint}|flip|{seed}|{p}|".encode())
    for pid in flipped.tolist():
        h.update(str(pid).encode() + b"\x00")
    noisy = dataclasses.replace(dataset, y_train=y, fingerprint=h.hexdigest(), path=None)
    return noisy, flipped


def _auc(is_pos: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(score)
    if ok.sum() < 2 or is_pos[ok].all() or not is_pos[ok].any():
        return float("nan")
    return float(roc_auc_score(is_pos[ok], score[ok]))


def noisy_label_check(
    dataset: Any,
    *,
    flip_fraction: float = 0.1,
    n_points: int | None = None,
    points: Sequence[Any] | None = None,
    model: str | None = None,
    sampling: Any = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Flip some labels, value the points, and measure how well low values find the flips.

    Parameters
    ----------
    dataset : Dataset
        A classification dataset.
    flip_fraction : float, default=0.1
        Fraction of the valued points whose label is flipped.
    n_points : int, optional
        Value this many pool points (chosen at random, seeded); default all,
        or ``points``.
    points : sequence of point ids, optional
        The points to value.
    model : str, optional
        Overrides the sampling configuration's model.
    sampling : SamplingConfig or mapping of its fields, optional
        How to sample marginal contributions (default ``SamplingConfig()``
        with the pool's default size range, :func:`~pointscale.sampling.config.default_k_range`).
    seed : int, default=0
        Seeds the choice of points and of the flips.

    Returns
    -------
    dict
        ``auc_shapley`` (AUC of −ν for being flipped), ``auc_c`` (of −c),
        ``auc_monte_carlo`` (of −Monte Carlo mean), ``n_points``,
        ``n_flipped``, ``flip_fraction``, ``negative_c_precision`` (share of
        points with c < 0 that were flipped), ``negative_c_recall``,
        ``k_range`` and ``table`` (a DataFrame per point: flipped, shapley, c,
        alpha, mc_mean).
    """
    from ..laws import fit_mle
    from ..sampling import SamplingConfig, sample_marginals

    if sampling is None:
        from ..sampling.config import default_k_range

        lo, hi = default_k_range(dataset.n_pool, dataset.n_classes)
        config = SamplingConfig(k_min=lo, k_max=hi)
    elif isinstance(sampling, Mapping):
        config = SamplingConfig(**dict(sampling))
    else:
        config = sampling
    if model is not None:
        config = dataclasses.replace(config, model=model)

    if points is not None:
        ids = list(points)
        dataset.index_of(ids)  # validates
    else:
        all_ids = np.asarray(dataset.point_ids, dtype=object)
        if n_points is None or n_points >= all_ids.size:
            ids = all_ids.tolist()
        else:
            g = rng(seed, STREAM_SELECTION, "noisy_points")
            ids = all_ids[np.sort(g.choice(all_ids.size, size=int(n_points), replace=False))].tolist()
    noisy, flipped = flip_labels(dataset, ids, flip_fraction, seed=seed)
    samples = sample_marginals(noisy, config, points=ids)
    laws = fit_mle(samples[["point_id", "k", "delta"]][~_failed(samples)])
    k_min, k_max = _k_range(config, laws, samples)
    shap = distributional_shapley(laws, k_min, k_max).to_series()
    mc = monte_carlo_values(samples)["mc_mean"]
    table = pd.DataFrame({"point_id": ids})
    table["flipped"] = table["point_id"].isin(set(flipped.tolist()))
    table["shapley"] = shap.reindex(ids).to_numpy()
    by_id = pd.Series(laws.c, index=laws.point_ids)
    table["c"] = by_id.reindex(ids).to_numpy(dtype=np.float64)
    table["alpha"] = pd.Series(laws.alpha, index=laws.point_ids).reindex(ids).to_numpy(dtype=np.float64)
    table["mc_mean"] = mc.reindex(ids).to_numpy(dtype=np.float64)
    pos = table["flipped"].to_numpy(dtype=bool)
    neg_c = table["c"].to_numpy() < 0
    return {
        "auc_shapley": _auc(pos, -table["shapley"].to_numpy(dtype=np.float64)),
        "auc_c": _auc(pos, -table["c"].to_numpy(dtype=np.float64)),
        "auc_monte_carlo": _auc(pos, -table["mc_mean"].to_numpy(dtype=np.float64)),
        "n_points": len(ids),
        "n_flipped": int(pos.sum()),
        "flip_fraction": float(flip_fraction),
        "negative_c_precision": float(pos[neg_c].mean()) if neg_c.any() else float("nan"),
        "negative_c_recall": float(neg_c[pos].mean()) if pos.any() else float("nan"),
        "k_range": [int(k_min), int(k_max)],
        "table": table,
    }


def _failed(samples: pd.DataFrame) -> np.ndarray:
    if "failed" in samples.columns:
        return samples["failed"].fillna(True).to_numpy(dtype=bool) | ~np.isfinite(
            samples["delta"].to_numpy(dtype=np.float64))
    return ~np.isfinite(samples["delta"].to_numpy(dtype=np.float64))


def _k_range(config: Any, laws: FittedScalingLaws, samples: pd.DataFrame) -> tuple[int, int]:
    lo, hi = getattr(config, "k_min", None), getattr(config, "k_max", None)
    if lo is not None and hi is not None:
        return int(lo), int(hi)
    if laws.k_range is not None:
        return laws.k_range
    return int(samples["k"].min()), int(samples["k"].max())
