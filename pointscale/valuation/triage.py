r"""Triage of new rows before they are sampled: a forecast value and a label-issue score in seconds.

When rows join a valued pool, every model trained on the earlier pool has
never seen them: each is out of bag for all of them. The triage fits
``n_bases`` base models of the run's own kind on subsets of the earlier pool
(class-stratified, sizes log-uniform over the run's [k_min, k_max], drawn
from the run's seed), scores the new rows as the sampling engine scores
out-of-bag points (:func:`pointscale.sampling.oob.score_predictions`, the
same size buckets) and turns that evidence into

* ``label_issue_score`` -- 1 − the mean probability those models give the
  row's label, as for the pool (:mod:`pointscale.valuation.label_issues`);
* ``forecast_value`` -- the Shapley value over [k_min, k_max] of the law the
  run's amortized estimator predicts from the row's features, label and that
  evidence (NaN when the run has no amortized estimator), with
  ``forecast_low``/``forecast_high`` = forecast ± 1.96 × the root mean square
  difference between the amortized and the chosen values of the earlier
  points (the estimator's own error on sampled points).

``n_bases`` fits of the run's model cost about as much as sampling one block;
the sampling of the new rows then runs as before, and the forecast is graded
against what it finds (:func:`grade_triage`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import DataError
from ..seeding import STREAM_OOB, rng

__all__ = ["triage_points", "grade_triage", "N_BASES"]

#: Base models fitted on the earlier pool to score the new rows.
N_BASES = 32
#: Base ids of the triage's subsets: far above any base id a sampling plan uses.
_TRIAGE_BASE_IDS = 1 << 40


def _evidence(dataset: Any, config: Any, new_idx: np.ndarray, n_bases: int) -> pd.DataFrame:
    """Out-of-bag evidence of the new rows from ``n_bases`` models trained on the earlier pool."""
    from ..sampling.ledger import summarize
    from ..sampling.models import make_estimator
    from ..sampling.oob import aggregate, score_predictions, size_bucket
    from ..sampling.plans import draw_subset, pool_info

    X, y = np.asarray(dataset.X_train), np.asarray(dataset.y_train)
    info = pool_info(dataset)
    gen = rng(config.seed, STREAM_OOB, "triage")
    lo, hi = np.log(config.k_min), np.log(config.k_max)
    y_scale = float(np.std(y[np.setdiff1d(np.arange(y.size), new_idx)])) if dataset.task == "regression" else 1.0
    index, bucket, correct, score = [], [], [], []
    for b in range(n_bases):
        k = int(np.clip(round(np.exp(gen.uniform(lo, hi))), config.k_min, config.k_max))
        D = draw_subset(info, config.seed, _TRIAGE_BASE_IDS + b, k, new_idx)
        model = make_estimator(config.model, dataset.task, int(gen.integers(2 ** 31)), config.model_params)
        try:
            model.fit(X[D], y[D])
            if dataset.task == "classification" and hasattr(model, "predict_proba"):
                proba = np.zeros((new_idx.size, dataset.n_classes))
                proba[:, np.asarray(model.classes_, dtype=np.intp)] = model.predict_proba(X[new_idx])
                ok, s = score_predictions(dataset.task, y[new_idx], proba)
            else:
                ok, s = score_predictions(dataset.task, y[new_idx], model.predict(X[new_idx]), y_scale=y_scale,
                                          is_proba=False if dataset.task == "classification" else True)
        except Exception:  # noqa: BLE001 -- a failed fit scores nothing (counted as missing evidence)
            continue
        index.append(new_idx)
        bucket.append(np.full(new_idx.size, size_bucket(k, config.k_min, config.k_max)))
        correct.append(ok)
        score.append(s)
    if not index:
        raise DataError(f"none of the {n_bases} triage models could be fitted on the earlier pool; "
                        "check the run's model settings")
    table = aggregate(np.asarray(dataset.point_ids, dtype=object), np.concatenate(index), np.concatenate(bucket),
                      np.concatenate(correct), np.concatenate(score))
    return summarize(table)


def triage_points(dataset: Any, config: Any, new_points: Sequence[str], *, amortized: Any = None,
                  values: pd.DataFrame | None = None, n_bases: int = N_BASES) -> pd.DataFrame:
    """Score and forecast ``new_points`` of ``dataset`` before they are sampled.

    Parameters
    ----------
    dataset : Dataset
        The new version (earlier pool plus the new rows).
    config : SamplingConfig
        The run's sampling config (model, k range, seed).
    new_points : sequence of str
    amortized : AmortizedScalingLaws, optional
        The run's fitted amortized estimator (``forecast_value``; NaN without it).
    values : DataFrame, optional
        The earlier values table (``shapley`` and ``shapley_amortized``) for the forecast's interval.

    Returns
    -------
    DataFrame
        One row per new point, most suspicious first: ``point_id``,
        ``label_issue_score``, ``n_oob``, ``forecast_value``,
        ``forecast_low``, ``forecast_high``.
    """
    from .values import distributional_shapley

    ids = np.asarray([str(p) for p in new_points], dtype=object)
    new_idx = dataset.index_of(ids)
    ev = _evidence(dataset, config, new_idx, n_bases).set_index("point_id").reindex(ids)
    out = pd.DataFrame({"point_id": ids, "label_issue_score": 1.0 - ev["oob_score"].to_numpy(dtype=np.float64),
                        "n_oob": ev["n_oob"].fillna(0).to_numpy(dtype=np.int64)})
    forecast = np.full(ids.size, np.nan)
    half = np.nan
    if amortized is not None:
        X, y = np.asarray(dataset.X_train)[new_idx], np.asarray(dataset.y_train)[new_idx]
        laws = amortized.predict_laws(X, y, ids, oob=ev.reset_index() if amortized.oob_features_ else None)
        forecast = distributional_shapley(laws, config.k_min, config.k_max).value
        if values is not None and {"shapley", "shapley_amortized"} <= set(values.columns):
            d = (values["shapley"] - values["shapley_amortized"]).to_numpy(dtype=np.float64)
            d = d[np.isfinite(d)]
            half = 1.96 * float(np.sqrt(np.mean(d ** 2))) if d.size else np.nan
    out["forecast_value"] = forecast
    out["forecast_low"] = forecast - half
    out["forecast_high"] = forecast + half
    return out.sort_values("label_issue_score", ascending=False, kind="stable").reset_index(drop=True)


def grade_triage(triage: pd.DataFrame, values: pd.DataFrame) -> dict[str, Any]:
    """How the triage did once the new rows were sampled: Spearman of forecast vs sampled value,
    and of the triage's label-issue score vs the run's (from every base model of the run)."""
    from scipy.stats import spearmanr

    merged = triage.merge(values[[c for c in ("point_id", "shapley", "label_issue_score") if c in values.columns]],
                          on="point_id", suffixes=("", "_run"))

    def rho(a: str, b: str) -> float | None:
        if a not in merged or b not in merged:
            return None
        ok = np.isfinite(merged[a].to_numpy(dtype=np.float64)) & np.isfinite(merged[b].to_numpy(dtype=np.float64))
        return round(float(spearmanr(merged.loc[ok, a], merged.loc[ok, b])[0]), 4) if ok.sum() > 2 else None

    inside = None
    if merged["forecast_low"].notna().any():
        v = merged["shapley"]
        inside = round(float(((v >= merged["forecast_low"]) & (v <= merged["forecast_high"])).mean()), 4)
    return {"points": int(len(merged)), "spearman_forecast_vs_sampled": rho("forecast_value", "shapley"),
            "spearman_label_score_vs_run": rho("label_issue_score", "label_issue_score_run"),
            "interval_coverage": inside}
