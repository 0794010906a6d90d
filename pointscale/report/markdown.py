"""``report.md``: what a person reads after a run, plus short summaries for the CLI.

Every section and figure appears only when its input is present, so the same
function reports a valuation-only run and a run with every experiment.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..io import atomic_write_text
from ..laws.diagnostic import ESTIMATOR_WORDS
from ..laws.likelihood import ALPHA_BOUND_TOL, PARAM_MAX
from ..laws.result import FittedScalingLaws
from . import figures as _fig

__all__ = ["write_report", "report_summary", "top_bottom_points", "markdown_table", "harmful_points",
           "label_issues_line"]

FIGURE_DIR = "figures"


# --------------------------------------------------------------------------- helpers


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return ""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isnan(x):
            return "–"
        if x == 0:
            return "0"
        if abs(x) >= 1e4 or abs(x) < 1e-3:
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}g}"
    if x is pd.NA:
        return "–"
    return str(x).replace("|", "\\|")


def _true(x: Any) -> bool:
    return x is not None and x is not pd.NA and bool(x)


def markdown_table(frame: pd.DataFrame, columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table (no dependency on ``tabulate``)."""
    cols = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in frame[cols].iterrows():
        lines.append("| " + " | ".join(_fmt(row[c], digits) for c in cols) + " |")
    return "\n".join(lines)


def _py(x: Any) -> Any:
    """Plain JSON-able Python values (for Prefect table artifacts)."""
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if math.isnan(x) else x
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if x is pd.NA:
        return None
    return x


def _ranked(values: pd.DataFrame, by: str) -> pd.DataFrame:
    v = values[np.isfinite(values[by].to_numpy(dtype=np.float64))]
    return v.sort_values(by, ascending=False, kind="stable")


def top_bottom_points(values: pd.DataFrame, n: int = 10, *, by: str = "shapley") -> list[dict[str, Any]]:
    """The n most and n least valuable points as a list of plain dicts.

    Keys: ``group`` ("top"/"bottom"), ``rank``, ``point_id``, ``label``, ``by``
    value, and ``c``, ``alpha``, ``estimator``, ``n_samples`` when present.
    """
    if by not in values.columns:
        raise KeyError(f"values has no column {by!r}")
    v = _ranked(values, by)
    v = v.assign(_rank=np.arange(1, len(v) + 1))
    keep = [c for c in ("point_id", "label", by, "c", "alpha", "estimator", "n_samples") if c in v.columns]
    out: list[dict[str, Any]] = []
    top = v.head(n)
    bottom = v.iloc[max(len(top), len(v) - n):]  # never list a point twice
    for group, part in (("top", top), ("bottom", bottom.iloc[::-1])):
        for _, r in part.iterrows():
            d = {"group": group, "rank": int(r["_rank"])}
            d.update({c: _py(r[c]) for c in keep})
            out.append(d)
    return out


def harmful_points(values: pd.DataFrame, limit: int = 20) -> pd.DataFrame:
    """Points with c < 0 (adding them hurts), most harmful first.

    ``confident`` is True when the whole 95 % interval of c lies below zero.
    """
    if "c" not in values.columns:
        return values.iloc[:0]
    c = values["c"].to_numpy(dtype=np.float64)
    h = values[np.isfinite(c) & (c < 0)].copy()
    if "c_high" in h.columns:
        h["confident"] = h["c_high"].to_numpy(dtype=np.float64) < 0
    sort_by = "shapley" if "shapley" in h.columns else "c"
    return h.sort_values(sort_by, kind="stable").head(limit)


def _k_range(laws: FittedScalingLaws | None, values: pd.DataFrame | None) -> tuple[int, int] | None:
    if laws is not None and laws.k_range is not None:
        return laws.k_range
    if values is not None:
        kr = values.attrs.get("k_range_shapley")
        if kr:
            return int(kr[0]), int(kr[1])
    return None


def _dataset_info(dataset: Any) -> dict[str, Any]:
    if dataset is None:
        return {}
    if isinstance(dataset, str):
        return {"name": dataset}
    info = {"name": getattr(dataset, "name", "?")}
    for attr in ("task", "n_pool", "n_features", "n_classes"):
        if hasattr(dataset, attr):
            info[attr] = getattr(dataset, attr)
    if hasattr(dataset, "fingerprint"):
        info["fingerprint"] = str(dataset.fingerprint)[:12]
    return info


def _addition_summary(exp: Any) -> tuple[pd.DataFrame | None, Sequence[str], Mapping[str, Any]]:
    if exp is None:
        return None, (), {}
    if isinstance(exp, pd.DataFrame):
        return exp, (), {}
    return getattr(exp, "summary", None), tuple(getattr(exp, "messages", ())), dict(getattr(exp, "settings", {}))


def _best_by_regime(summary: pd.DataFrame) -> list[str]:
    out = []
    for reg in pd.unique(summary["regime"]):
        s = summary[summary["regime"] == reg]
        if s["mean_gain"].notna().any():
            best = s.loc[s["mean_gain"].idxmax()]
            rand = s[s["ranking"] == "random"]["mean_gain"]
            rtxt = f" (random {rand.iloc[0]:+.4f})" if len(rand) else ""
            out.append(f"{reg} n={int(best['n_initial'])}: best {best['ranking']} "
                       f"{best['mean_gain']:+.4f} ± {best['se_gain']:.4f}{rtxt}")
    return out


# --------------------------------------------------------------------------- summary


#: The summary's words for the sampling counts (those for the estimators: ESTIMATOR_WORDS).
COUNT_WORDS = {"shard_seconds": "seconds of sampling on workers", "fits_executed": "model fits",
               "samples_new": "new samples", "samples_reused": "reused samples"}


def _preparation(dataset: Any) -> list[str]:
    """What reading the data did to it (rows dropped, columns converted or dropped), one line each."""
    return list((getattr(dataset, "report", None) or {}).get("data_preparation") or [])


def label_issues_line(issues: Mapping[str, Any]) -> str:
    """One sentence: how many rows look mislabelled and the estimated rate (run.json's ``label_issues``)."""
    n, total, rate = int(issues["n_flagged"]), int(issues["n_points"]), float(issues["noise_rate"])
    where = f"; list in {issues['file']}" if issues.get("file") and n else ""
    return (f"label issues: {n:,} of {total:,} rows look mislabelled (estimated noise rate {rate:.1%}{where})")


def report_summary(
    *,
    dataset: Any = None,
    laws: FittedScalingLaws | None = None,
    values: pd.DataFrame | None = None,
    experiments: Mapping[str, Any] | None = None,
    evaluation: pd.DataFrame | None = None,
    manifest: Mapping[str, Any] | None = None,
    law_diagnostic: Mapping[str, Any] | None = None,
    estimator_choice: Mapping[str, Any] | None = None,
) -> str:
    """A few lines for the CLI and a Prefect markdown artifact.

    Every argument is optional; each adds its lines when given. From
    ``manifest`` only a ``counts`` mapping (e.g. samples, fits) is shown;
    ``law_diagnostic`` adds its sentence (:mod:`pointscale.laws.diagnostic`),
    ``estimator_choice`` what the automatic selection excluded or overrode;
    and the ``label_issues`` summary of ``manifest`` its count line.
    """
    lines = []
    info = _dataset_info(dataset)
    if info:
        lines.append(f"Dataset {info.get('name')}: {info.get('n_pool', '?')} pool points, task {info.get('task', '?')}")
        lines += [f"data: {line}" for line in _preparation(dataset)]
    if law_diagnostic and law_diagnostic.get("sentence"):
        lines.append(str(law_diagnostic["sentence"]))
    lines += _choice_notes(estimator_choice)
    if values is not None and len(values):
        n = len(values)
        counts = values["estimator"].value_counts().to_dict() if "estimator" in values.columns else {}
        est = "; ".join(f"{ESTIMATOR_WORDS.get(k, k)}" + (f" ({v} points)" if len(counts) > 1 else "")
                        for k, v in counts.items())
        lines.append(f"Valued {n} points" + (f": values from {est}" if est else ""))
        if "alpha" in values.columns:
            a = values["alpha"].to_numpy(dtype=np.float64)
            a = a[np.isfinite(a)]
            if a.size:
                q = np.quantile(a, [0.1, 0.5, 0.9])
                lines.append(f"alpha: median {q[1]:.2f} (10-90%: {q[0]:.2f}-{q[2]:.2f})")
                top = float(np.mean(a >= PARAM_MAX - ALPHA_BOUND_TOL))
                if top >= 0.5:
                    lines.append(f"alpha at its upper bound (e² = {PARAM_MAX:.2f}) for {top:.0%} of points: these "
                                 "samples do not pin the exponent down, and the values lean on the smallest sizes; "
                                 "trust them only with more samples per point")
        h = harmful_points(values, limit=10 ** 9)
        if "c" in values.columns:
            conf = int(h["confident"].sum()) if "confident" in h.columns else 0
            lines.append(f"negative c (harmful): {len(h)} points, {conf} with the 95% interval below 0")
        if "shapley" in values.columns:
            r = _ranked(values, "shapley")
            if len(r):
                lines.append(f"most valuable: {r['point_id'].iloc[0]} (shapley {r['shapley'].iloc[0]:.3g}); "
                             f"least: {r['point_id'].iloc[-1]} ({r['shapley'].iloc[-1]:.3g})")
    elif laws is not None:
        lines.append(f"Laws ({laws.estimator}) for {laws.n_points} points")
    experiments = experiments or {}
    summ, _, _ = _addition_summary(experiments.get("point_addition"))
    if summ is not None and not summ.empty:
        lines.append("point addition: " + "; ".join(_best_by_regime(summ)))
    noisy = experiments.get("noisy_label")
    if noisy:
        lines.append(f"noisy labels: AUC(low shapley finds flips) {noisy.get('auc_shapley', float('nan')):.3f}, "
                     f"AUC(Monte Carlo) {noisy.get('auc_monte_carlo', float('nan')):.3f}")
    if evaluation is not None and not evaluation.empty and "target" in evaluation.columns:
        ev = evaluation[evaluation["target"] == "shapley"]
        for _, r in ev.iterrows():
            who = r.get("method", "estimate")
            lines.append(f"vs ground truth ({who}): explained variance {r['explained_variance']:.3f}, "
                         f"Spearman {r['spearman']:.3f}")
    issues = (manifest or {}).get("label_issues")
    if isinstance(issues, Mapping) and issues.get("n_points"):
        lines.append(label_issues_line(issues))
    counts = (manifest or {}).get("counts")
    if isinstance(counts, Mapping) and counts:
        lines.append("counts: " + ", ".join(f"{COUNT_WORDS.get(k, k.replace('_', ' '))} {_fmt(v)}"
                                            for k, v in counts.items() if not isinstance(v, (Mapping, list, tuple))))
    return "\n".join(lines) if lines else "nothing to report"


def _choice_notes(choice: Mapping[str, Any] | None) -> list[str]:
    """What the automatic selection set aside, overrode or used anyway, each in one line with what to do."""
    if not choice:
        return []
    lines = [f"estimator {name} was not used: {why}" for name, why in (choice.get("excluded") or {}).items()]
    if choice.get("overridden"):
        lines.append(f"estimator choice: {choice['overridden']}")
    if choice.get("used_anyway"):
        lines.append(f"warning: {choice['used_anyway']}; treat them with care (more samples per point help "
                     "the fits converge)")
    return lines


# --------------------------------------------------------------------------- report


def write_report(
    run_dir: str | Path,
    *,
    dataset: Any = None,
    laws: FittedScalingLaws | None = None,
    values: pd.DataFrame | None = None,
    selection: pd.DataFrame | None = None,
    experiments: Mapping[str, Any] | None = None,
    evaluation: pd.DataFrame | None = None,
    manifest: Mapping[str, Any] | None = None,
    top_n: int = 10,
    estimator_choice: Mapping[str, Any] | None = None,
    learning_curve: Mapping[str, Any] | None = None,
    law_diagnostic: Mapping[str, Any] | None = None,
    label_issues: pd.DataFrame | None = None,
) -> Path:
    """Write ``run_dir/report.md`` and its PNG figures (under ``run_dir/figures``).

    Parameters
    ----------
    run_dir : path
    dataset : Dataset or str, optional
    laws : FittedScalingLaws, optional
        For the sampled size range and the fit summary.
    values : DataFrame, optional
        The values table (:func:`pointscale.valuation.values_table`).
    selection : DataFrame, optional
        Output of :func:`pointscale.valuation.select_points`.
    experiments : mapping, optional
        ``point_addition`` (PointAdditionResult or its summary), ``removal``
        (removal-curve DataFrame), ``noisy_label`` (dict from
        :func:`~pointscale.valuation.noisy_label_check`).
    evaluation : DataFrame, optional
        Output of :func:`pointscale.valuation.evaluate_estimates`.
    manifest : mapping, optional
        Run facts (config hash, counts, versions) listed at the end.
    estimator_choice : mapping, optional
        ``meta['selection']`` of the laws behind ``shapley``
        (:func:`pointscale.laws.fit_laws`): the estimator and the held-out scores.
    learning_curve : mapping, optional
        :func:`pointscale.valuation.learning_curve.fit_learning_curve`'s result
        (with ``metric``).
    law_diagnostic : mapping, optional
        ``meta['law_diagnostic']`` of the laws behind ``shapley``: its sentence
        heads the report, its numbers get a section.
    label_issues : DataFrame, optional
        The flagged rows (``label_issues.csv``); with ``manifest['label_issues']``
        (count, rate, rule) they make the "Label issues" section.

    Returns
    -------
    Path of ``report.md``. All files are written atomically.
    """
    run_dir = Path(run_dir)
    fig_dir = run_dir / FIGURE_DIR
    experiments = dict(experiments or {})
    info = _dataset_info(dataset)
    md = _title_section(info, report_summary(dataset=dataset, laws=laws, values=values, experiments=experiments,
                                             evaluation=evaluation, manifest=manifest, law_diagnostic=law_diagnostic,
                                             estimator_choice=estimator_choice))
    md += _diagnostic_section(law_diagnostic)
    md += _data_section(info, _preparation(dataset))
    md += _estimator_section(estimator_choice)
    md += _control_variate_section(estimator_choice)
    md += _laws_section(laws)
    md += _values_sections(values, fig_dir, _k_range(laws, values), top_n)
    md += _label_issues_section((manifest or {}).get("label_issues"), label_issues)
    md += _learning_curve_section(learning_curve)
    md += _selection_section(selection)
    md += _point_addition_section(experiments.get("point_addition"), fig_dir)
    md += _removal_section(experiments.get("removal"), info, fig_dir)
    md += _noisy_label_section(experiments.get("noisy_label"))
    md += _evaluation_section(evaluation)
    md += _run_section(manifest)
    return atomic_write_text(run_dir / "report.md", "\n".join(md).rstrip() + "\n")


# --------------------------------------------------------------------------- the report's sections
# Each returns its Markdown lines (none when its input is absent) and draws its figures.


def _figure(path: Path | None, caption: str) -> list[str]:
    """A drawn figure and its caption (nothing when the figure was not drawn)."""
    if path is None:
        return []
    return [f"![{caption}]({FIGURE_DIR}/{path.name})", "", f"*{caption}*", ""]


def _title_section(info: Mapping[str, Any], summary: str) -> list[str]:
    return [f"# pointscale report{': ' + str(info['name']) if info.get('name') else ''}", "",
            "```", summary, "```", ""]


def _data_section(info: Mapping[str, Any], preparation: Sequence[str] = ()) -> list[str]:
    if not info:
        return []
    md = ["## Data", ""] + [f"- {k}: {_fmt(v)}" for k, v in info.items()] + [""]
    return md + ([f"- {line}" for line in preparation] + [""] if preparation else [])


def _estimator_section(choice: Mapping[str, Any] | None) -> list[str]:
    """Which estimator's laws give ``shapley``, and, for the automatic choice, its held-out scores."""
    if not choice:
        return []
    md = ["## Estimator", ""]
    chosen = choice.get("chosen")
    if choice.get("method") != "auto":
        return md + [f"`shapley` comes from the **{chosen}** laws (chosen by the user).", ""]
    target = choice.get("target")
    what = {"shapley": "of the candidate's Shapley value over the sampled range (one shared variance)",
            "psi": "of the candidate's law for psi_k at the sample's size (its own noise model)"}.get(target, "")
    margin = choice.get("margin") or {}
    margin_line = ([f"Margin over the next best ({margin['to']}): {_fmt(margin.get('value'))} "
                    f"± {_fmt(margin.get('se'))} held-out NLL per sample.", ""] if margin.get("to") else [])
    return md + [f"`shapley` (and the selection) comes from the **{chosen}** laws, chosen by held-out likelihood: "
                 f"{choice.get('folds')}-fold cross-validation over each point's samples "
                 f"({choice.get('n_heldout_samples')} samples, each held out once), every candidate "
                 f"fitted on the other folds; mean Gaussian NLL per held-out sample {what} (lower is better; the "
                 "first candidate within one standard error of the lowest is chosen):", "",
                 markdown_table(pd.DataFrame([{"estimator": k, "heldout_nll": v,
                                               "not_converged_share": (choice.get("not_converged_share") or {}).get(k)}
                                              for k, v in (choice.get("heldout_nll") or {}).items()])),
                 ""] + margin_line + [f"- {line}" for line in _choice_notes(choice)] + (
                     [""] if _choice_notes(choice) else [])


def _diagnostic_section(d: Mapping[str, Any] | None) -> list[str]:
    """Does the law hold, and how reliable the values are (:mod:`pointscale.laws.diagnostic`)."""
    if not d:
        return []
    rows = [("verdict", d.get("verdict")),
            ("held-out log-likelihood gain per sample (law - no law)", d.get("loglik_gain_per_sample")),
            ("its standard error (points as clusters)", d.get("loglik_gain_se")),
            ("law tested", d.get("law_estimator")), ("no-law model it was tested against", d.get("no_law_model")),
            ("share of points whose law fits at least as well", d.get("share_good_fit")),
            ("values from", d.get("estimator")), ("reliability (split-half, Spearman-Brown)", d.get("reliability")),
            ("samples per point for reliability 0.8", d.get("samples_for_reliability_0.8")),
            ("samples per point for reliability 0.9", d.get("samples_for_reliability_0.9")),
            ("samples per point now", d.get("samples_per_point")),
            ("control variate", d.get("control_variate", "none"))]
    return ["## Does the law hold, and how reliable are the values", "", str(d.get("sentence", "")), "",
            markdown_table(pd.DataFrame([{"": k, "value": _fmt(v)} for k, v in rows])), "",
            f"Rule: {d.get('rule', '')}.", ""]


def control_variate_sentence(record: Mapping[str, Any] | None) -> str | None:
    """One sentence on the block-mean control variate of a run (None: the run has no record)."""
    if not record:
        return None
    if not record.get("available"):
        return f"Block-mean control variate: not available ({record.get('reason')})."
    found = (f"within-point correlation {record['correlation']:.2f}, b = {record['b']:.2f}, "
             f"variance of each point's samples {-100 * record['variance_reduction']:+.0f} %")
    if "heldout_gain" in record and record.get("heldout_gain_se"):
        found += f"; cross-fitted gain {record['heldout_gain'] / record['heldout_gain_se']:.1f} standard errors"
    how = {"auto": "where it helps", "on": "asked for", "off": "switched off"}.get(record.get("setting"), "")
    state = "applied" if record.get("applied") else "not applied"
    return f"Block-mean control variate {state} ({how}): {found}."


def _control_variate_section(choice: Mapping[str, Any] | None) -> list[str]:
    sentence = control_variate_sentence((choice or {}).get("control_variate"))
    return [sentence, ""] if sentence else []


def _laws_section(laws: FittedScalingLaws | None) -> list[str]:
    if laws is None:
        return []
    return ["## Scaling laws", "", "```", laws.summary(), "```", ""]


def _value_columns(values: pd.DataFrame) -> list[str]:
    """The ``value_at_<size>`` columns (without their interval bounds)."""
    return [c for c in values.columns if c.startswith("value_at_") and not c.endswith(("_low", "_high"))]


def _values_sections(values: pd.DataFrame | None, fig_dir: Path, k_range: tuple[int, int] | None,
                     top_n: int) -> list[str]:
    """The figures of α and ψ_k, then the sections on the values table."""
    if values is None or not len(values):
        return []
    vcols = _value_columns(values)
    sizes = []
    for c in vcols:
        try:
            sizes.append(float(c[len("value_at_"):]))
        except ValueError:
            pass
    kmax_plot = max(sizes) if sizes else None
    md = _figure(_fig.alpha_histogram(values, fig_dir / "alpha_hist.png"),
                 "Distribution of α: large α = valuable mostly in small datasets")
    md += _figure(_fig.psi_curves(values, fig_dir / "psi_curves.png", k_range=k_range, k_max_plot=kmax_plot),
                  "ψ_k = c·k^(−α) for the most and least valuable points; grey: sampled sizes")
    md += _top_bottom_section(values, k_range, top_n)
    md += _target_sizes_section(values, vcols)
    md += _harmful_section(values)
    md += _flags_section(values)
    md += _monte_carlo_section(values, fig_dir)
    return md


def _top_bottom_section(values: pd.DataFrame, k_range: tuple[int, int] | None, top_n: int) -> list[str]:
    md = ["## Most and least valuable points", ""]
    if k_range:
        kr = values.attrs.get("k_range_shapley", list(k_range))
        md += [f"Shapley value = mean of ψ_k over k = {kr[0]}..{kr[1]}.", ""]
    tb = pd.DataFrame(top_bottom_points(values, top_n)) if "shapley" in values.columns else pd.DataFrame()
    if not tb.empty:
        md += [markdown_table(tb, ["group", "rank", "point_id", "label", "shapley", "c", "alpha",
                                   "estimator", "n_samples"]), ""]
    return md


def _target_sizes_section(values: pd.DataFrame, vcols: Sequence[str]) -> list[str]:
    if not vcols:
        return []
    rows = []
    for c in vcols:
        lab = c[len("value_at_"):]
        v = values[c].to_numpy(dtype=np.float64)
        ex = values.get(f"extrapolated_{lab}")
        rows.append({"size": lab, "median": np.nanmedian(v) if np.isfinite(v).any() else np.nan,
                     "negative": int(np.sum(v < 0)),
                     "extrapolated": bool(np.any(ex)) if ex is not None else False})
    return ["### Values at target sizes", "", markdown_table(pd.DataFrame(rows)), "",
            "Sizes outside the sampled range are extrapolations of the fitted law.", ""]


def _harmful_section(values: pd.DataFrame) -> list[str]:
    h = harmful_points(values)
    md = ["## Harmful points (negative c)", ""]
    if h.empty:
        return md + ["No point has a negative c.", ""]
    n_all = int(np.sum(values["c"].to_numpy(dtype=np.float64) < 0))
    md += [f"{n_all} point(s) have c < 0: adding them is predicted to *lower* the score at every "
           f"size. The most harmful {len(h)}; `confident` = the 95 % interval of c lies below zero.", ""]
    flag_cols = [c for c in h.columns if c.startswith("flag_")]
    h = h.assign(flags=[", ".join(c[5:] for c in flag_cols if _true(r[c])) for _, r in h.iterrows()])
    return md + [markdown_table(h, ["point_id", "label", "shapley", "c", "c_low", "c_high", "confident",
                                    "alpha", "flags"]), ""]


def _label_issues_section(summary: Mapping[str, Any] | None, flagged: pd.DataFrame | None,
                          limit: int = 20) -> list[str]:
    if not isinstance(summary, Mapping) or not summary.get("n_points"):
        return []
    sentence = label_issues_line(summary)
    md = ["## Label issues", "", sentence[:1].upper() + sentence[1:] + ".", "",
          f"Score: `label_issue_score` in values.parquet (higher = more likely a label problem), from the "
          f"out-of-bag predictions of the run's own base models: no extra fit. Flagged: {summary.get('rule')}.", ""]
    if flagged is not None and len(flagged):
        shown = flagged.head(limit)
        md += [f"The {len(shown)} most suspicious (all {len(flagged)} in {summary.get('file', 'label_issues.csv')}):",
               "", markdown_table(shown, ["point_id", "label_issue_score", "given_label", "suggested_label"]), ""]
    return md


def _flags_section(values: pd.DataFrame) -> list[str]:
    flag_cols = [c for c in values.columns if c.startswith("flag_")]
    if not flag_cols:
        return []
    return ["### Diagnostic flags", "",
            markdown_table(pd.DataFrame({"flag": [c[5:] for c in flag_cols],
                                         "points": [int(values[c].fillna(False).sum()) for c in flag_cols]})),
            ""]


def _monte_carlo_section(values: pd.DataFrame, fig_dir: Path) -> list[str]:
    if not {"mc_mean", "shapley"} <= set(values.columns):
        return []
    return ["## Law-based value vs Monte Carlo", ""] + _figure(
        _fig.value_vs_monte_carlo(values, fig_dir / "value_vs_mc.png"),
        "Law-based Shapley value against the plain mean of the same samples")


def _learning_curve_section(lc: Mapping[str, Any] | None) -> list[str]:
    if lc and "epsilon" in lc:
        return ["## Learning curve (how much would more data help?)", "",
                f"From the {lc['n_bases']} base fits of the sampling (sizes {lc['k_range'][0]}..{lc['k_range'][1]}), "
                f"utility `{lc.get('metric', 'U')}`: U(k) = ε − c·k^(−α) with ε = {_fmt(lc['epsilon'])} "
                f"[{_fmt(lc['epsilon_low'])}, {_fmt(lc['epsilon_high'])}], c = {_fmt(lc['c'])} "
                f"[{_fmt(lc['c_low'])}, {_fmt(lc['c_high'])}], α = {_fmt(lc['alpha'])} "
                f"[{_fmt(lc['alpha_low'])}, {_fmt(lc['alpha_high'])}] (95 % bootstrap intervals).", "",
                markdown_table(pd.DataFrame(lc["predictions"]), ["k", "u", "low", "high", "extrapolated"]), "",
                "Rows are the current pool, 2× and 10× it; sizes beyond the sampled range are extrapolations.",
                ""]
    if lc and lc.get("skipped"):
        return ["## Learning curve", "", f"Not fitted: {lc['skipped']}", ""]
    return []


def _selection_section(selection: pd.DataFrame | None) -> list[str]:
    if selection is None or not len(selection):
        return []
    md = ["## Selected points", ""]
    n_at = selection["n_current"].iloc[0] if "n_current" in selection.columns else None
    if n_at is not None:
        by = (f" by the {selection['estimator'].iloc[0]} laws (the estimator behind `shapley`)"
              if "estimator" in selection.columns else "")
        md += [f"The {len(selection)} candidates with the highest predicted ψ at size {_fmt(n_at)}{by}.", ""]
    md += [markdown_table(selection.head(50), ["rank", "point_id", "label", "predicted_value"]), ""]
    if len(selection) > 50:
        md += [f"(first 50 of {len(selection)}; all in selection.parquet)", ""]
    return md


def _point_addition_section(experiment: Any, fig_dir: Path) -> list[str]:
    summ, msgs, settings = _addition_summary(experiment)
    if summ is None or summ.empty:
        return []
    md = ["## Point addition", ""]
    if settings:
        md += ["Settings: " + ", ".join(f"{k}={_fmt(v) if not isinstance(v, list) else v}"
                                       for k, v in settings.items()), ""]
    md += [f"- note: {m}" for m in msgs] + ([""] if msgs else [])
    md += [markdown_table(summ, ["regime", "n_initial", "ranking", "metric", "m", "mean_gain", "se_gain",
                                 "mean_gain_vs_random", "se_gain_vs_random", "n_repeats", "n_failed"]), "",
           "Expected: the ranking at the matching size gains most in each regime; all law-based "
           "rankings beat random. `vs random` is the paired difference (same initial data).", ""]
    return md + _figure(_fig.selection_gains(summ, fig_dir / "selection_gains.png"),
                        f"Change of the test {_fig._metric_name(summ)} after adding the selected points (mean ± s.e.)")


def _removal_section(removal: pd.DataFrame | None, info: Mapping[str, Any], fig_dir: Path) -> list[str]:
    if removal is None or not len(removal):
        return []
    name = _fig._metric_name(removal)
    n_test = int(removal["n_test"].iloc[0]) if "n_test" in removal.columns else None
    md = ["## Removal curves", ""]
    if "n_pool_used" in removal.columns and info.get("n_pool") \
            and int(removal["n_pool_used"].iloc[0]) < int(info["n_pool"]):
        md += [f"Computed on a seeded random subsample of {int(removal['n_pool_used'].iloc[0])} of the "
               f"{int(info['n_pool'])} pool points (each fraction refits the model; the budget bounds "
               "the cost); fractions are of the valued points in the subsample.", ""]
    md += [f"`score` is test {name}" + (f" on {n_test} test rows" + (
               f" (one row = {100 / n_test:.2f} pp: differences of a row or two are noise)"
               if name == "accuracy" and n_test < 500 else "") if n_test else "") + ".", "",
           markdown_table(removal, ["strategy", "fraction", "n_removed", "metric", "score", "se", "n_failed"]), ""]
    return md + _figure(_fig.removal_curves(removal, fig_dir / "removal_curves.png"),
                        f"Test {name} after removing valued points, lowest-valued first, highest first, or at random")


def _noisy_label_section(noisy: Mapping[str, Any] | None) -> list[str]:
    if not noisy:
        return []
    return ["## Noisy-label check", "",
            f"Flipped the labels of {noisy.get('n_flipped')} of {noisy.get('n_points')} valued points "
            f"({_fmt(noisy.get('flip_fraction'))}). How well a low value singles them out (ROC AUC; 0.5 = chance):",
            "",
            markdown_table(pd.DataFrame([
                {"score": "law-based Shapley", "auc": noisy.get("auc_shapley")},
                {"score": "c", "auc": noisy.get("auc_c")},
                {"score": "Monte Carlo mean", "auc": noisy.get("auc_monte_carlo")},
            ])), "",
            f"Points with c < 0 that were flipped (precision): {_fmt(noisy.get('negative_c_precision'))}; "
            f"flipped points with c < 0 (recall): {_fmt(noisy.get('negative_c_recall'))}.", ""]


def _evaluation_section(evaluation: pd.DataFrame | None) -> list[str]:
    if evaluation is None or not len(evaluation):
        return []
    return ["## Accuracy against ground truth", "",
            markdown_table(evaluation, ["method", "target", "n_points", "explained_variance", "pearson",
                                        "spearman", "sign_agreement"]), "",
            "Explained variance = 1 − MSE / Var(truth); targets are sizes k (ψ_k) or the Shapley value.", ""]


def _run_section(manifest: Mapping[str, Any] | None) -> list[str]:
    if not manifest:
        return []
    md = ["## Run", ""]
    for k, v in manifest.items():
        text = json.dumps(v, default=str, sort_keys=True) if isinstance(v, (dict, list, tuple)) else _fmt(v)
        md.append(f"- {k}: {text}")
    return md + [""]


def inline_figures(markdown: str, run_dir: str | Path) -> str:
    """``markdown`` with every ``![caption](figures/x.png)`` replaced by an inline ``data:`` image.

    For viewers that cannot follow a relative path (the Prefect UI shows an
    artifact without the run folder, so a relative image link is a broken
    image there). Links to missing files are left as they are.
    """
    import base64
    import re

    root = Path(run_dir)

    def embed(match: "re.Match[str]") -> str:
        path = root / match.group(2)
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"![{match.group(1)}](data:image/png;base64,{data})"

    return re.sub(rf"!\[([^\]]*)\]\(({re.escape(FIGURE_DIR)}/[^)\s]+\.png)\)", embed, markdown)
