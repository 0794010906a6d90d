"""Figures of a reproduction, built from its saved tables and arrays (PNG, matplotlib's Agg canvas).

Labels are read from the data they describe: the point-addition axis names
the outcome metric found in the addition table, the R² panel the statistic
found in the law-fit table.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from pointscale.io import atomic_write_bytes


def _save(fig, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def law_figure(arrays: Mapping[str, pd.DataFrame], law_fit: pd.DataFrame, alpha: pd.DataFrame, title: str,
               path: Path) -> Path | None:
    """Empirical ψ_k against the law; R² per size with its ceiling; α distributions; α vs margin."""
    from matplotlib.figure import Figure

    if "psi" not in arrays:
        return None
    psi, se, pred, pts = arrays["psi"], arrays["se"], arrays["pred"], arrays["points"]
    ks = np.asarray([float(c) for c in psi.columns])
    fig = Figure(figsize=(15, 8.4), layout="constrained")
    ax = fig.subplots(2, 3).ravel()
    fig.suptitle(f"{title}: does ψ_k ≈ c·k^(−α) hold?")
    # (a) empirical vs law, symmetric-log axes so negative ψ stay visible
    o, p = psi.to_numpy().ravel(), pred.to_numpy().ravel()
    ok = np.isfinite(o) & np.isfinite(p)
    ax[0].scatter(o[ok], p[ok], s=3, alpha=0.3)
    lim = float(np.nanmax(np.abs(np.r_[o[ok], p[ok]]))) if ok.any() else 1.0
    ax[0].plot([-lim, lim], [-lim, lim], "k--", lw=0.7)
    thr = max(float(np.nanquantile(np.abs(o[ok]), 0.05)), 1e-9) if ok.any() else 1e-6
    ax[0].set_xscale("symlog", linthresh=thr)
    ax[0].set_yscale("symlog", linthresh=thr)
    ax[0].tick_params(axis="x", labelrotation=45)
    ax[0].set_xlabel("empirical ψ_k (mean Δ at size k)")
    ax[0].set_ylabel("law c·k^(−α) (MLE on the ground truth)")
    # (b) example points
    mean_abs = np.nanmean(np.abs(psi.to_numpy()), axis=1)
    order = np.argsort(-np.nan_to_num(mean_abs, nan=-np.inf))
    picks = order[np.linspace(0, max(len(order) // 2, 0), min(5, len(order))).astype(int)] if len(order) else []
    kk = np.geomspace(ks.min(), ks.max(), 100)
    for j, i in enumerate(picks):
        ax[1].errorbar(ks, np.abs(psi.iloc[i].to_numpy()), yerr=se.iloc[i].to_numpy(), fmt="o", ms=3, color=f"C{j}",
                       lw=0.7)
        c, a = pts["c"].iloc[i], pts["alpha"].iloc[i]
        if np.isfinite(c) and np.isfinite(a):
            ax[1].plot(kk, np.abs(c) * kk ** (-a), color=f"C{j}", lw=1, label=f"α={a:.2f}, c={c:.2g}")
    ax[1].set_xscale("log")
    ax[1].set_yscale("log")
    ax[1].set_xlabel("k")
    ax[1].set_ylabel("|ψ_k| (± s.e.)")
    ax[1].set_title("example points")
    ax[1].legend(fontsize=7)
    # (c) R² per size, in and out of sample, with the noise ceilings
    lf = law_fit[(law_fit["law"] == "mle") & ~law_fit["target"].isin(["mean_per_size", "pooled"])]
    for how, style in (("in-sample", "o-"), ("out-of-sample", "^-")):
        part = lf[lf["fit"] == how]
        if part.empty:
            continue
        k = part["target"].astype(float).to_numpy()
        ax[2].plot(k, part["r2"], style, label=f"law, {how}")
        ax[2].plot(k, part["noise_ceiling"], "--", color="0.5" if how == "in-sample" else "0.75",
                   label=f"noise ceiling ({'all samples' if how == 'in-sample' else 'half'})")
    ax[2].set_xscale("log")
    ax[2].set_ylim(-0.2, 1.02)
    ax[2].set_xlabel("k")
    ax[2].set_ylabel("R² across points at size k")
    ax[2].set_title("per-size R² (the paper's statistic averages these)")
    ax[2].legend(fontsize=7)
    # (d) per-point log-log R²
    r2 = pts["log_ols_r2"].to_numpy()
    r2 = r2[np.isfinite(r2)]
    ax[3].hist(np.clip(r2, -1, 1), bins=30)
    ax[3].axvline(0.9, color="C3", lw=0.8, label="paper's filter 0.9")
    ax[3].set_xlabel("per-point R² of log|ψ_k| on log k (clipped at −1)")
    ax[3].set_ylabel("points")
    ax[3].legend(fontsize=7)
    # (e) alpha histogram (MLE on the ground truth: no prior on α)
    a = pts["alpha"].to_numpy()
    a = a[np.isfinite(a)]
    ax[4].hist(a, bins=30)
    ax[4].axvspan(1.0, 1.5, color="C2", alpha=0.15, label="paper's typical range")
    ax[4].set_xlabel("α (MLE on the ground truth, no prior)")
    ax[4].set_ylabel("points")
    ax[4].set_title(f"α (median {np.median(a) if a.size else float('nan'):.2f})")
    ax[4].legend(fontsize=7)
    # (f) alpha against the full model's margin
    m, al, c = pts["margin"].to_numpy(), pts["alpha"].to_numpy(), pts["c"].to_numpy()
    okm = np.isfinite(m) & np.isfinite(al)
    ax[5].scatter(m[okm], al[okm], c=np.where(c[okm] < 0, 1, 0), cmap="coolwarm", s=8)
    ax[5].axvline(0, color="k", lw=0.6)
    ax[5].set_xlabel("signed margin y·logit of a model fitted on the whole pool")
    ax[5].set_ylabel("α")
    ax[5].set_title("α vs margin (red: c < 0)")
    return _save(fig, path)


def estimator_figure(accuracy: pd.DataFrame, shapley: pd.DataFrame, addition: pd.DataFrame, title: str,
                     path: Path) -> Path | None:
    """ψ_k accuracy per size, Shapley accuracy vs samples, point-addition gains (metric read from the table)."""
    from matplotlib.figure import Figure

    if accuracy.empty and shapley.empty:
        return None
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    ax = fig.subplots(1, 3)
    fig.suptitle(f"{title}: estimators against the ground truth")
    for (est, n), part in accuracy.groupby(["estimator", "n"], sort=True):
        part = part.sort_values("k")
        ax[0].plot(part["k"], part["explained_variance"], marker="o", ms=3, ls="--" if est == "amortized" else "-",
                   label=f"{est}, n={n}")
    if not accuracy.empty:
        ceil = accuracy.drop_duplicates("k").sort_values("k")
        ax[0].plot(ceil["k"], ceil["noise_ceiling"], color="0.5", ls=":", label="noise ceiling")
    ax[0].set_xscale("log")
    ax[0].set_ylim(-1, 1.02)
    ax[0].set_xlabel("k")
    ax[0].set_ylabel("explained variance of ψ_k (clipped at −1)")
    ax[0].legend(fontsize=7)
    for est, part in shapley.groupby("estimator", sort=True):
        part = part.sort_values("n")
        ax[1].plot(part["n"], part["explained_variance"], marker="o", label=est)
    if not shapley.empty:
        ax[1].axhline(shapley["noise_ceiling"].iloc[0], color="0.5", ls=":", label="noise ceiling")
    ax[1].set_xscale("log")
    ax[1].set_ylim(-1, 1.02)
    ax[1].set_xlabel("samples per point n")
    ax[1].set_ylabel("explained variance (clipped at −1)")
    ax[1].set_title("distributional Shapley value")
    ax[1].legend(fontsize=7)
    ran = addition[addition["refused"].fillna("").eq("")] if "refused" in addition else addition
    if not ran.empty:
        metric = ", ".join(sorted(set(ran["metric"].astype(str))))
        scale = 100.0 if metric == "accuracy" else 1.0
        groups = list(ran.groupby(["laws", "regime"], sort=False).groups)
        rankings = [r for r in ("size_small", "size_large", "shapley") if r in set(ran["ranking"])]
        width = 0.8 / max(len(rankings), 1)
        for j, name in enumerate(rankings):
            part = ran[ran["ranking"] == name].set_index(["laws", "regime"]).reindex(groups)
            xs = np.arange(len(groups)) + (j - (len(rankings) - 1) / 2) * width
            ax[2].bar(xs, scale * part["mean_gain_vs_random"], width, yerr=scale * part["se_gain_vs_random"].fillna(0),
                      capsize=3, label=name)
        n0 = ran.drop_duplicates(["laws", "regime"]).set_index(["laws", "regime"])["n_initial"]
        ax[2].set_xticks(np.arange(len(groups)), [f"{law}\nn={int(n0[(law, r)])}" for law, r in groups], fontsize=7)
        ax[2].axhline(0, color="k", lw=0.6)
        ax[2].legend(fontsize=7)
        ax[2].set_ylabel(f"test {metric} gain over random" + (" (pp)" if scale == 100.0 else "") + ", mean ± s.e.")
    ax[2].set_title("point addition (paired with random)")
    return _save(fig, path)
