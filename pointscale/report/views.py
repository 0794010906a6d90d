"""Short Markdown views of a run for a dashboard (the Prefect UI shows them as artifacts).

Each view is a plain function from tables or the run's manifest to Markdown
text: numbers rounded for a person (4 significant digits), every row of a
view on one page, no link that needs the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .markdown import markdown_table, top_bottom_points

#: What each output file holds, for the outputs view.
DESCRIPTIONS = {
    "report.md": "the report (figures in figures/)",
    "values.parquet": "per point: Shapley value, values at target sizes, c, α, intervals, flags",
    "selection.parquet": "the selected points and their predicted values",
    "laws_mle.parquet": "per-point laws, maximum likelihood",
    "laws_amortized.parquet": "per-point laws, amortized estimator",
    "removal.parquet": "removal curves",
    "values_change.parquet": "per existing point: Shapley value before and after the revaluation",
    "run.json": "manifest: options, fingerprints, versions, counts, timings, current outputs",
    "samples/": "the sample ledger (checksummed Parquet shards)",
}


def _size(n_bytes: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return ""


def values_view(values: pd.DataFrame, n: int = 10, *, by: str = "shapley") -> str:
    """The n most and n least valuable points as two Markdown tables."""
    rows = pd.DataFrame(top_bottom_points(values, n, by=by))
    if rows.empty:
        return f"No point has a finite {by} value."
    columns = ["rank", "point_id", "label", by, "c", "alpha", "estimator", "n_samples"]
    k_range = values.attrs.get("k_range_shapley")
    lines = [f"# Values of {len(values)} points", ""]
    if k_range and by == "shapley":
        lines += [f"Shapley value = mean of ψ_k = c·k^(−α) over k = {k_range[0]}..{k_range[1]}.", ""]
    for group, title in (("top", f"Most valuable {n}"), ("bottom", f"Least valuable {n}")):
        part = rows[rows["group"] == group]
        if len(part):
            lines += [f"## {title}", "", markdown_table(part, columns), ""]
    return "\n".join(lines)


def values_change_view(change: pd.DataFrame, summary: Mapping[str, Any], n: int = 10) -> str:
    """Before/after view of a revaluation: the summary and the points whose value moved most."""
    lines = ["# Values before and after the revaluation", "",
             f"- points compared: {summary.get('points_compared')}",
             f"- new points: {summary.get('points_new')}",
             f"- Spearman correlation before/after: {_num(summary.get('spearman_before_after'))}",
             f"- median absolute change: {_num(summary.get('median_abs_change'))}"]
    causes = summary.get("by_cause")
    if causes:
        sizes = summary.get("sizes", {})
        lines.append(f"- median absolute change of the value at the current size ({sizes.get('before')} → "
                     f"{sizes.get('after')} rows) by cause: new dataset size {_num(causes.get('size'))}, "
                     f"refitted prior {_num(causes.get('prior'))}, new samples {_num(causes.get('new_samples'))}")
    lines.append("")
    if len(change):
        moved = change.assign(_abs=np.abs(change["change"].to_numpy(dtype=np.float64)))
        moved = moved[np.isfinite(moved["_abs"])].sort_values("_abs", ascending=False, kind="stable").head(n)
        cols = ["point_id", "shapley_before", "shapley_after", "change", "rank_before", "rank_after",
                "size", "prior", "new_samples"]
        lines += [f"## The {len(moved)} largest moves", "", markdown_table(moved, cols), ""]
    return "\n".join(lines)


def outputs_view(run_dir: str | Path, manifest: Mapping[str, Any]) -> str:
    """Which files this run's outputs are, where they are, how large: one readable list.

    Reads ``manifest["outputs"]`` (see :mod:`pointscale.pipeline`): a stage
    recorded as None is listed as not part of this run, so a file left over
    by an earlier run with other switches is never presented as current.
    """
    root = Path(run_dir)
    outputs = manifest.get("outputs") or {}
    rows, off = [], []
    for stage, record in outputs.items():
        if record is None:
            off.append(stage)
            continue
        for name in record.get("files", {}):
            path = root / name
            rows.append({"file": name, "holds": DESCRIPTIONS.get(name, stage),
                         "size": _size(path.stat().st_size) if path.exists() else "missing"})
    for name in ("report.md", "run.json", "samples/"):
        path = root / name
        if path.exists() and name not in {r["file"] for r in rows}:
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() \
                else path.stat().st_size
            rows.append({"file": name, "holds": DESCRIPTIONS.get(name, ""), "size": _size(size)})
    lines = ["# Outputs", "", f"Run folder: `{root}`", "", markdown_table(pd.DataFrame(rows)), "",
             "Current outputs only (their sha256 are in run.json, under `outputs`)."]
    if off:
        lines += ["Not part of this run (switched off; any such file in the folder is from an earlier run): "
                  + ", ".join(f"`{s}`" for s in off), ""]
    return "\n".join(lines)


def _num(x: Any) -> str:
    if x is None:
        return "–"
    x = float(x)
    return "–" if not np.isfinite(x) else f"{x:.4g}"
