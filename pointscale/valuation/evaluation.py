"""How close value estimates are to ground truth (SPEC §4, the paper's Sec. 4.3).

For estimates ê and ground truth t over the same points (pairs with a NaN on
either side are dropped, and counted):

* explained variance  1 − mean((ê − t)²) / var(t), with var the population
  variance (ddof = 0) so that ê = mean(t) scores exactly 0 and a perfect
  estimate 1; it is negative for estimates worse than the constant mean;
* Pearson correlation; Spearman rank correlation (average ranks for ties);
* sign agreement: the fraction of points with sign(ê) = sign(t).

Correlations are NaN when either side is constant (undefined, not 0).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ..errors import DataError

__all__ = ["evaluate_estimates", "score_pair", "METRICS"]

METRICS = ("explained_variance", "pearson", "spearman", "sign_agreement")


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2:
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    if den == 0.0:
        return float("nan")
    return float(np.clip((a * b).sum() / den, -1.0, 1.0))


def score_pair(estimate: Any, truth: Any) -> dict[str, float]:
    """The metrics of the module docstring for two aligned 1-D arrays."""
    e = np.asarray(estimate, dtype=np.float64).ravel()
    t = np.asarray(truth, dtype=np.float64).ravel()
    if e.shape != t.shape:
        raise DataError(f"estimate has {e.size} values, truth {t.size}; they must align")
    ok = np.isfinite(e) & np.isfinite(t)
    e, t = e[ok], t[ok]
    n = int(e.size)
    out: dict[str, float] = {"n_points": n, "n_dropped": int((~ok).sum())}
    if n == 0:
        out.update({m: float("nan") for m in METRICS}, mse=float("nan"))
        return out
    mse = float(np.mean((e - t) ** 2))
    var = float(np.var(t))
    out["explained_variance"] = 1.0 - mse / var if var > 0 else float("nan")
    out["pearson"] = _corr(e, t)
    out["spearman"] = _corr(rankdata(e), rankdata(t))
    out["sign_agreement"] = float(np.mean(np.sign(e) == np.sign(t)))
    out["mse"] = mse
    return out


def _as_frame(x: Any, what: str) -> pd.DataFrame:
    if isinstance(x, pd.Series):
        return x.to_frame(name=x.name if x.name is not None else "value")
    if isinstance(x, pd.DataFrame):
        return x
    if hasattr(x, "to_series"):  # ValueEstimate
        s = x.to_series()
        return s.to_frame(name="shapley")
    raise DataError(f"{what} must be a Series or DataFrame indexed by point_id; got {type(x).__name__}")


def _key(c: Any) -> Any:
    # size columns may be ints in one table and floats or strings in another
    try:
        f = float(c)
    except (TypeError, ValueError):
        return str(c)
    return int(f) if f.is_integer() else f


def evaluate_estimates(estimates: Any, truth: Any) -> pd.DataFrame:
    """Compare estimates with ground truth, per target (size k or ``"shapley"``).

    Parameters
    ----------
    estimates : Series, DataFrame, ValueEstimate, or mapping of name to one of those
        Indexed by point id. DataFrame columns name the targets: sizes k (for
        ψ_k) and/or ``"shapley"``. A Series is a single target named by its
        name. A mapping compares several methods (e.g. ``{"mle": ..., "monte_carlo": ...}``).
    truth : Series or DataFrame
        Same layout as one estimate. Only targets present on both sides and
        points present on both sides are compared.

    Returns
    -------
    DataFrame
        Long format: ``method`` (when a mapping was given), ``target``,
        ``n_points``, ``n_dropped``, ``explained_variance``, ``pearson``,
        ``spearman``, ``sign_agreement``, ``mse``. Targets sorted with sizes
        first (ascending), then named ones.

    Raises
    ------
    DataError
        If no target or no point is shared.
    """
    if isinstance(estimates, Mapping):
        parts = []
        for name, est in estimates.items():
            part = evaluate_estimates(est, truth)
            part.insert(0, "method", name)
            parts.append(part)
        if not parts:
            raise DataError("estimates is an empty mapping")
        return pd.concat(parts, ignore_index=True)

    est = _as_frame(estimates, "estimates")
    tru = _as_frame(truth, "truth")
    if isinstance(truth, pd.Series) and isinstance(estimates, pd.Series):
        # two bare Series: compare them whatever their names
        est = est.set_axis(["value"], axis=1)
        tru = tru.set_axis(["value"], axis=1)
    est = est.set_axis([_key(c) for c in est.columns], axis=1)
    tru = tru.set_axis([_key(c) for c in tru.columns], axis=1)
    targets = [c for c in tru.columns if c in set(est.columns)]
    if not targets:
        raise DataError(
            f"estimates (targets {list(est.columns)}) and truth (targets {list(tru.columns)}) "
            "share no target"
        )
    common = est.index.intersection(tru.index)
    if common.size == 0:
        raise DataError("estimates and truth share no point id")
    numeric = sorted([t for t in targets if not isinstance(t, str)])
    named = [t for t in targets if isinstance(t, str)]
    rows = []
    for t in numeric + named:
        e = est.loc[common, t].to_numpy(dtype=np.float64)
        g = tru.loc[common, t].to_numpy(dtype=np.float64)
        rows.append({"target": str(t), **score_pair(e, g)})
    cols = ["target", "n_points", "n_dropped", *METRICS, "mse"]
    return pd.DataFrame(rows)[cols]
