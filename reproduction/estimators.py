"""The estimator comparison as a section of the reproduction page.

The comparison itself (law estimators against an independent ground truth,
and finding flipped labels) is run by ``python -m benchmarks.estimators
--save DIR``, which writes ``estimators_values.csv`` and
``estimators_flips.csv``. This module owns their format on the page: the
method order (:data:`METHODS`), the tables (:func:`markdown`) and the
section (:func:`results_section`); ``pointscale reproduce`` appends the
section when the saved tables are committed under
``benchmarks/results/estimators`` (:func:`saved_section`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["METHODS", "SAVED", "markdown", "results_section", "saved_section"]

#: The compared methods, in the order of the tables.
METHODS = ("monte_carlo", "shrunk_mean", "mle", "shrinkage", "amortized", "amortized_shrinkage", "auto")
#: Where the committed tables of the comparison live.
SAVED = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "estimators"


def markdown(values: pd.DataFrame | None, flips: pd.DataFrame | None) -> str:
    """The benchmark's tables as Markdown (for docs/benchmarks.md and docs/results.md)."""
    parts = []
    if values is not None and not values.empty:
        for name, frame in values.groupby("dataset", sort=False):
            metric = frame["metric"].iloc[0]
            t = frame.pivot(index="method", columns="n", values="shapley_ev").reindex(list(METHODS))
            r = frame.pivot(index="method", columns="n", values="shapley_spearman").reindex(list(METHODS))
            parts.append(f"\n**{name}/logreg**, utility `{metric}`: Shapley explained variance (Spearman) "
                         f"against the truth, by samples per point\n")
            head = "| method | " + " | ".join(str(n) for n in t.columns) + " |"
            parts += [head, "|---" * (len(t.columns) + 1) + "|"]
            for m in t.index:
                cells = [f"{t.loc[m, n]:.3f} ({r.loc[m, n]:.3f})" if np.isfinite(t.loc[m, n]) else "–"
                         for n in t.columns]
                parts.append(f"| {m} | " + " | ".join(cells) + " |")
            choice = frame[frame["method"] == "auto"].set_index("n")["auto_choice"]
            parts.append("\nauto chose: " + ", ".join(f"{n}: {c}" for n, c in choice.items()) + "\n")
    if flips is not None and not flips.empty:
        for (name, n), frame in flips.groupby(["dataset", "n"], sort=False):
            t = frame.pivot(index="column", columns="seed", values="auc")
            t["mean"] = t.mean(axis=1)
            choice = frame.drop_duplicates("seed").set_index("seed")["auto_choice"]
            parts.append(f"\n**Flipped labels** ({name}, {n} samples per point, 1,000-point pool, 10 % flipped, "
                         "clean validation split): AUC of a low value, by seed\n")
            parts += ["| column | " + " | ".join(f"seed {c}" for c in t.columns[:-1]) + " | mean |",
                      "|---" * (len(t.columns) + 1) + "|"]
            for c in t.index:
                parts.append(f"| {c} | " + " | ".join(f"{t.loc[c, k]:.3f}" for k in t.columns) + " |")
            parts.append("\nauto chose: " + ", ".join(f"seed {k}: {v}" for k, v in choice.items()) + "\n")
    return "\n".join(parts)


def results_section(folder: str | Path) -> str:
    """Markdown for docs/results.md from a saved run (``--save FOLDER``): a separate section.

    Reads ``estimators_values.csv`` and ``estimators_flips.csv`` (either may be
    missing) and returns the tables with a heading and the protocol in one line.
    """
    folder = Path(folder)
    values = pd.read_csv(folder / "estimators_values.csv") if (folder / "estimators_values.csv").exists() else None
    flips = pd.read_csv(folder / "estimators_flips.csv") if (folder / "estimators_flips.csv").exists() else None
    head = ["## Law estimators against an independent ground truth (benchmarks/estimators.py)", "",
            "200 points per dataset, k uniform in [100, 1000], ground truth = 400 independent samples per "
            "point (another seed); estimates from the first n of 100 samples per point. "
            "`auto` = `fit_laws(method=\"auto\")`; `shrunk_mean` = the fair shrunk mean (normal–normal empirical Bayes of the plain means).", ""]
    return "\n".join(head) + markdown(values, flips) + "\n"


def saved_section(folder: str | Path = SAVED) -> str:
    """:func:`results_section` of the tables saved in ``folder``; empty when none is there."""
    return results_section(folder) if (Path(folder) / "estimators_values.csv").exists() else ""
