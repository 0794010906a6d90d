"""The results page (docs/results.md), written from the small tables under docs/results/ alone.

Verdicts first, one screen; then the rule that made them; then the tables.
Nothing here computes a statistic: :mod:`reproduction.settle` does, and the
page only formats its CSVs, so ``pointscale reproduce --settle --page-only``
rewrites the page byte for byte from a checkout.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .verdicts import CEILING_DECIDABLE, CI_WIDTH_DECIDABLE, R2_LOW_REPRODUCED, R2_REPRODUCED, Z_FINDING

TABLE_NAMES = ("verdicts", "verdict_reasons", "laws", "crn", "addition", "extrapolation", "shapley", "cost")
COMMAND = "pointscale reproduce --settle"


def read_tables(folder: str | Path) -> dict[str, pd.DataFrame]:
    folder = Path(folder)
    out = {}
    for name in TABLE_NAMES:
        p = folder / f"{name}.csv"
        out[name] = pd.read_csv(p) if p.exists() and p.stat().st_size > 1 else pd.DataFrame()
    return out


def _f(x, d: int = 3) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(x):
        return "–"
    if x != 0 and abs(x) < 10 ** -d:
        return f"{x:.1e}"
    return f"{x:.{d}f}"


def _md(frame: pd.DataFrame, columns: list[str], digits: int = 3) -> str:
    if frame.empty:
        return "_(no rows)_"
    cols = [c for c in columns if c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in frame[cols].iterrows():
        lines.append("| " + " | ".join(_f(r[c], digits) if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def _verdict_lines(t: dict[str, pd.DataFrame]) -> list[str]:
    v, why = t["verdicts"], t["verdict_reasons"]
    if v.empty:
        return ["_No verdicts yet: run `pointscale reproduce --settle`._"]
    lines = ["| finding | dataset | model | config | statistic | value [95 % interval] | ceiling | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in v.iterrows():
        interval = f" [{_f(r['ci_low'])}, {_f(r['ci_high'])}]" if pd.notna(r["ci_low"]) else ""
        lines.append(f"| {r['finding']} | {r['dataset']} | {r['model']} | {r['config']} | {r['statistic']} | "
                     f"{_f(r['value'], 4 if 'addition' in r['finding'] else 3)}{interval} | {_f(r['ceiling'])} | "
                     f"**{r['verdict']}** |")
    lines += ["", "Why, per row:", ""]
    for _, r in why.iterrows():
        lines.append(f"* {r['finding']}, {r['dataset']}, {r['model']} ({r['config']}): {r['reason']}")
    return lines


def _rule_lines() -> list[str]:
    return [
        "## The rule behind each verdict", "",
        "Implemented in `reproduction/verdicts.py`; tested on planted tables in `tests/core/test_verdicts.py`.", "",
        "* **Law fit** (does ψ_k ≈ c·k^(−α) hold?). The law is fitted per point by weighted least squares to the "
        "cell means of one half of the ground-truth rounds and scored against the other half. Statistic: the "
        "*noise-corrected R²* — 1 − Σ(SSE − N)/Σ(SST − N) over sizes, between points (each size centred on its "
        "mean), where N is the noise the other half's cell means carry — with a 95 % bootstrap interval over points and rounds. "
        f"A table is decidable when its out-of-sample noise ceiling is ≥ {CEILING_DECIDABLE} or the interval is at most "
        f"{CI_WIDTH_DECIDABLE} wide; otherwise **not measurable**, with the depth a ceiling of {CEILING_DECIDABLE} needs: "
        "per size c_k = T_k/(T_k + N_k) with the noise N_k falling as 1/n, the depth n′ at which the mean over sizes "
        "reaches w = 0.9 (rows tabulated before this rule used the single-ceiling n·(1 − c)/c · w/(1 − w), which "
        "under-sizes when the sizes' ceilings differ: 351 against 638 on adult's MLP at 53 samples). Decidable tables are **reproduced** when the "
        f"noise-corrected R² is ≥ {R2_REPRODUCED}, else **not reproduced**; where the interval's lower end is below "
        f"{R2_LOW_REPRODUCED} the reason says why it is wide (one point holding most of the between-point variance "
        "makes the ratio swing when points are resampled). A per-point χ² lack-of-fit test (bootstrap-calibrated) "
        "qualifies the verdict in the reasons.",
        "* **Point addition, law rankings beat random**: in both regimes every law ranking's gain over random, paired "
        f"by initial set, is positive by ≥ {Z_FINDING:g} paired standard errors.",
        "* **Point addition, the size-matched ranking wins**: the difference in differences [g(small-size ranking) − "
        "g(large-size ranking)] at the small initial size minus the same at the large size, > "
        f"{Z_FINDING:g} s.e.; the matched ranking must be ahead in each regime and beat random there (a ranking below "
        "random never wins).",
    ]


def _appendix(t: dict[str, pd.DataFrame]) -> list[str]:
    out = ["## Appendix: the tables", "",
           "Every table is a CSV in `docs/results/`, written by the same command.", "",
           "### Law fit, per dataset and model", "",
           _md(t["laws"], ["dataset", "model", "config", "points", "samples_per_size", "value", "ci_low", "ci_high",
                           "ceiling", "paper_r2", "paper_ceiling", "size_mean_misfit", "chi2_per_df", "lof_p",
                           "share_points_fit"]),
           "", "`value` is the noise-corrected R²; `paper_r2` the paper's statistic (mean per-size `r2_score`, out of "
           "sample) beside its own ceiling `paper_ceiling`; `size_mean_misfit` the squared gap of the average law from "
           "the average ψ over the between-point variance.", "",
           "### What common random numbers bought (non-linear ground truth)", "",
           _md(t["crn"], ["dataset", "model", "corr_with_block_mean", "between_point_noise_ratio",
                          "variance_reduction"]),
           "", "Every point of a (size, round) cell shares one base subset. `corr_with_block_mean`: within a cell, the "
           "correlation of a point's Δ with the other points' mean Δ on the same base; `variance_reduction`: the share "
           "of the per-cell noise variance that the between-point comparison no longer carries.", "",
           "### Point addition (logistic regression; outcome: change of test accuracy)", "",
           _md(t["addition"], ["dataset", "source", "candidates", "n_initial", "ranking", "gain_vs_random",
                               "se_vs_random", "repeats", "mean_gain"], digits=5),
           "", "`gain_vs_random` is paired by initial set; the rows `a − b` are the matched ranking against the other "
           "size's ranking. `paper` laws: log-space laws of the staggered ground truth, points with per-point R² ≥ 0.9 "
           "(the paper's filter); `default` laws: the product's default estimator on 30 uniform samples per point.", "",
           "### Extrapolation (adult, logistic regression; laws fitted on sizes 100..1000)", "",
           _md(t["extrapolation"], ["laws", "k", "extrapolation_factor", "points", "samples_per_size", "r2", "pearson",
                                    "ceiling"]),
           "", *_shapley_lines(t), "### Cost", "",
           _md(t["cost"], ["dataset", "phase", "new_samples", "wall_s", "cpu_s"], digits=0),
           "", "`cpu_s`: CPU seconds of the sampling process as this command measured them (empty where only wall "
           "time was logged); `wall_s`: wall seconds on the project's 2-core machine, shared with other work.",
           ]
    return out


def _shapley_lines(t: dict[str, pd.DataFrame]) -> list[str]:
    if t["shapley"].empty:
        return []
    return ["### Shapley values: the default estimator against Monte Carlo (non-linear models)", "",
            _md(t["shapley"], ["dataset", "model", "n", "default", "monte_carlo", "se_ev_vs_monte_carlo",
                               "law_ev_vs_monte_carlo", "se_law_ev_vs_monte_carlo", "auto_choice",
                               "truth_reliability", "truth_depth"]),
            "", "Noise-corrected between-point explained variance against the truth above (the trapezoid mean of its "
            "per-size means over k in [100, 1000]), of values from n uniform-k samples per point of 128 points "
            "(seed 1; the 32 truth points scored); `default`, `monte_carlo`: the product's default and the plain "
            "mean; `law_ev_vs_monte_carlo`: the shrinkage laws minus the plain mean; `se_*`: bootstrap s.e. over "
            "points of the differences. From `python -m benchmarks.estimators --part models` (its table is committed under "
            "`benchmarks/results/estimators/`).", ""]


def render(t: dict[str, pd.DataFrame]) -> str:
    cost = t["cost"]
    cpu_h = float(cost["cpu_s"].sum()) / 3600 if not cost.empty else float("nan")
    wall_h = float(cost["wall_s"].sum()) / 3600 if not cost.empty else float("nan")
    lines = [
        "# Results: the paper's findings, settled per model class", "",
        f"Written by `{COMMAND}` from the tables in `docs/results/` (`--page-only` rewrites this page from them, "
        f"byte for byte). Sampling so far: {_f(wall_h, 2)} hours of wall time on a shared 2-core machine, of which "
        f"{_f(cpu_h, 2)} core-hours were measured as CPU (the first passes logged wall time only).", "",
        "Data: UCI Adult and MAGIC gamma telescope (`make data`); utility: the default `paper_ce` on the validation "
        "split. Non-linear models: 32 points per dataset with common random numbers (one base subset per size and "
        "round shared by all 32), sizes 100..1000 (ten, staggered) and 2,000. Logistic regression: 1,000 points, "
        "30 samples per size. A non-linear ground truth's samples are committed in `reproduction/ground_truth/` "
        "(`reproduction/archive.py`), so a checkout re-derives its row and a later machine deepens it; rows sampled "
        "before that archive existed are kept as they were measured.", "",
        "## Verdicts", "",
        *_verdict_lines(t), "",
        *_rule_lines(), "",
        *_appendix(t), "",
    ]
    return "\n".join(lines)


def write_page(tables_folder: str | Path, path: str | Path) -> Path:
    path = Path(path)
    text = render(read_tables(tables_folder))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
