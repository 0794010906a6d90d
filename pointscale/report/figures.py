"""PNG figures of a run, drawn with matplotlib's object API (no pyplot).

Using :class:`matplotlib.figure.Figure` with the Agg canvas directly keeps the
library free of global plotting state: no backend switch, no open-figure
registry, safe in worker threads. Every figure is rendered to memory and
written atomically. Each function returns the path written, or None when its
input holds nothing to draw.
"""

from __future__ import annotations

import io
from pathlib import Path
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..io import atomic_write_bytes

__all__ = [
    "alpha_histogram",
    "psi_curves",
    "value_vs_monte_carlo",
    "selection_gains",
    "removal_curves",
]

_DPI = 110


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def alpha_histogram(values: pd.DataFrame, path: Path) -> Path | None:
    """Histogram of the fitted α (one colour per estimator)."""
    if values is None or "alpha" not in values.columns:
        return None
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot()
    alpha = values["alpha"].to_numpy(dtype=np.float64)
    ok = np.isfinite(alpha)
    if not ok.any():
        return None
    bins = np.histogram_bin_edges(alpha[ok], bins=min(40, max(5, int(np.sqrt(ok.sum())))))
    est = values["estimator"].to_numpy() if "estimator" in values.columns else np.full(len(values), "")
    for name in pd.unique(est[ok]):
        sel = ok & (est == name)
        ax.hist(alpha[sel], bins=bins, alpha=0.7, label=f"{name} ({int(sel.sum())})")
    ax.axvline(np.median(alpha[ok]), color="k", lw=1, ls="--", label=f"median {np.median(alpha[ok]):.2f}")
    ax.set_xlabel("α (decay exponent of ψ_k)")
    ax.set_ylabel("points")
    ax.set_title("Fitted α")
    ax.legend(fontsize=8)
    return _save(fig, path)


def psi_curves(values: pd.DataFrame, path: Path, *, k_range: tuple[int, int] | None,
               k_max_plot: float | None = None, n: int = 5) -> Path | None:
    """ψ_k = c·k^(−α) for the n most and n least valuable points (by ``shapley``)."""
    need = {"c", "alpha", "shapley", "point_id"}
    if values is None or not need <= set(values.columns):
        return None
    v = values[np.isfinite(values["shapley"].to_numpy(dtype=np.float64))
               & np.isfinite(values["alpha"].to_numpy(dtype=np.float64))]
    if v.empty:
        return None
    v = v.sort_values("shapley", ascending=False, kind="stable")
    top, bottom = v.head(n), v.tail(n).iloc[::-1]
    lo = k_range[0] if k_range else 10
    hi = k_max_plot or (10 * k_range[1] if k_range else 10_000)
    ks = np.geomspace(max(1.0, lo / 2), hi, 200)
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2, sharex=True)
    for ax, part, title in ((axes[0], top, "most valuable"), (axes[1], bottom, "least valuable")):
        for _, r in part.iterrows():
            # log-log keeps a power law straight; a negative c is drawn dashed as |ψ_k|
            psi = np.abs(r["c"] * ks ** (-r["alpha"]))
            neg = r["c"] < 0
            ax.plot(ks, psi, lw=1.4, ls="--" if neg else "-",
                    label=f"{str(r['point_id'])[:10]} c={r['c']:.2g} α={r['alpha']:.2f}")
        if k_range:
            ax.axvspan(k_range[0], k_range[1], color="0.9", zorder=0, label="sampled sizes")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("dataset size k")
        ax.set_title(f"ψ_k of the {len(part)} {title} points")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("|predicted ψ_k|  (dashed: c < 0, harmful)")
    return _save(fig, path)


#: Points drawn in a scatter at most: beyond this a seeded subsample is drawn
#: (the title says so; the correlation uses every point).
SCATTER_MAX_POINTS = 5_000


def value_vs_monte_carlo(values: pd.DataFrame, path: Path) -> Path | None:
    """Law-based Shapley value against the Monte Carlo mean of the same samples.

    The correlation is over all points; the scatter draws at most
    :data:`SCATTER_MAX_POINTS` of them (seeded subsample), so the figure's
    cost does not grow with the data.
    """
    if values is None or not {"shapley", "mc_mean"} <= set(values.columns):
        return None
    x = values["mc_mean"].to_numpy(dtype=np.float64)
    y = values["shapley"].to_numpy(dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return None
    fig = Figure(figsize=(4.8, 4.5))
    ax = fig.add_subplot()
    # Pearson is undefined where every value is the same (a shrunk mean with no between-point spread).
    r = np.corrcoef(x[ok], y[ok])[0, 1] if np.ptp(x[ok]) > 0 and np.ptp(y[ok]) > 0 else float("nan")
    shown = np.flatnonzero(ok)
    if shown.size > SCATTER_MAX_POINTS:
        shown = np.sort(np.random.default_rng(0).choice(shown, SCATTER_MAX_POINTS, replace=False))
    if "mc_se" in values.columns:
        se = values["mc_se"].to_numpy(dtype=np.float64)[shown]
        ax.errorbar(x[shown], y[shown], xerr=np.where(np.isfinite(se), se, 0), fmt="none",
                    ecolor="0.8", lw=0.6, zorder=1)
    ax.scatter(x[shown], y[shown], s=10, zorder=2)
    lim = np.array([min(x[ok].min(), y[ok].min()), max(x[ok].max(), y[ok].max())])
    ax.plot(lim, lim, "k--", lw=0.8, label="y = x")
    ax.set_xlabel("Monte Carlo mean of Δ (± s.e.)")
    ax.set_ylabel("law-based Shapley value")
    drawn = f"; {shown.size} drawn" if shown.size < ok.sum() else ""
    pearson = "Pearson undefined: every value is the same" if np.isnan(r) else f"Pearson {r:.2f}"
    ax.set_title(f"Law vs Monte Carlo ({pearson}, {int(ok.sum())} points{drawn})")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _metric_name(frame: pd.DataFrame) -> str:
    """The outcome's name as the experiment recorded it (``metric`` column), e.g. ``accuracy``."""
    if "metric" in frame.columns and frame["metric"].notna().any():
        return ", ".join(sorted(set(frame["metric"].dropna().astype(str))))
    return "score"


def selection_gains(summary: pd.DataFrame, path: Path) -> Path | None:
    """Mean test-metric gain ± s.e. per ranking, one group per regime (the metric named by the table)."""
    if summary is None or summary.empty or not {"regime", "ranking", "mean_gain"} <= set(summary.columns):
        return None
    regimes = list(pd.unique(summary["regime"]))
    rankings = list(pd.unique(summary["ranking"]))
    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.add_subplot()
    width = 0.8 / len(rankings)
    xs = np.arange(len(regimes))
    for j, name in enumerate(rankings):
        part = summary[summary["ranking"] == name].set_index("regime").reindex(regimes)
        ax.bar(xs + (j - (len(rankings) - 1) / 2) * width, part["mean_gain"], width,
               yerr=part["se_gain"].fillna(0), capsize=3, label=name)
    labels = []
    for reg in regimes:
        n0 = summary.loc[summary["regime"] == reg, "n_initial"]
        labels.append(f"{reg} (n={int(n0.iloc[0])})" if len(n0) else reg)
    ax.set_xticks(xs, labels)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel(f"change of test {_metric_name(summary)}")
    ax.set_title("Point addition: gain by ranking (mean ± s.e.)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def removal_curves(curve: pd.DataFrame, path: Path) -> Path | None:
    """Test metric against the fraction of valued points removed, per strategy (the metric named by the table)."""
    if curve is None or curve.empty or not {"strategy", "fraction", "score"} <= set(curve.columns):
        return None
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    for name in pd.unique(curve["strategy"]):
        part = curve[curve["strategy"] == name].sort_values("fraction")
        f = part["fraction"].to_numpy(dtype=np.float64)
        s = part["score"].to_numpy(dtype=np.float64)
        ax.plot(f, s, marker="o", ms=3, label=name)
        se = part["se"].to_numpy(dtype=np.float64) if "se" in part.columns else None
        if se is not None and np.isfinite(se).any():
            ax.fill_between(f, s - se, s + se, alpha=0.2)
    ax.set_xlabel("fraction of valued points removed")
    ax.set_ylabel(f"test {_metric_name(curve)}")
    ax.set_title("Removal curves")
    ax.legend(fontsize=8)
    return _save(fig, path)
