"""How ``label_issue_score`` and its noise-rate rule were chosen, on data other than adult and magic.

Run ``python -m benchmarks.label_issue_selection``; it writes
``benchmarks/results/label_issue_selection.csv`` (one row per setting and
candidate) and prints the table of means that ``docs/label_issues.md``
quotes. Settings: breast_cancer, digits (binarised, < 5 against the rest)
and two synthetic tasks (``make_classification``: 2,000 rows, 10 features
of which 5 informative, class_sep 1; balanced, and 3:1), 1,000-row pools
(all when smaller) with 5, 10, 20 and 30 % of the labels flipped, seeds 0
and 1 (20 and 30 % seed 0 only), logistic regression; 10 samples per
point, as in the benchmark (:mod:`benchmarks.label_issues`,
whose cached evidence this reuses).

Every candidate is a function of the run's own evidence only (the given
labels, the out-of-bag probabilities, the law values and the plain mean);
the true flips are used to score the candidates, never inside one. The
chosen candidate: the best mean AUC over the settings, and among the
candidates within :data:`MARGIN` of it the one with the fewest inputs (the
out-of-bag evidence alone before a combination with the law value or the
plain mean). The rate rule: the smallest mean absolute error of the
estimated rate. Adult and magic, the benchmark's reported data, are never
used. (The margin and the candidates with the plain self-confidence in a
rank combination were added after the first 14 settings had run.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from benchmarks.estimators import flip_pool
from benchmarks.label_issues import _md, _quiet, pointscale_evidence
from pointscale.valuation import label_issues as li

OUT = Path("benchmarks/results/label_issue_selection.csv")
#: Candidates within this much mean AUC of the best count as level with it.
MARGIN = 0.005
SETTINGS = [(name, "logreg", rate, seed) for name in ("breast_cancer", "digits", "synthetic", "synthetic_imbalanced")
            for rate in (0.05, 0.1, 0.2, 0.3) for seed in ((0, 1) if rate <= 0.1 else (0,))]


def synthetic(seed: int, imbalanced: bool = False):
    """2,000 rows of ``make_classification`` (10 features, 5 informative); 3:1 classes when ``imbalanced``."""
    from sklearn.datasets import make_classification

    from pointscale.data import load_dataset

    X, y = make_classification(n_samples=2000, n_features=10, n_informative=5, class_sep=1.0, flip_y=0.0,
                               weights=[0.75, 0.25] if imbalanced else None, random_state=1000 + seed)
    frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])]).assign(target=y)
    name = f"synthetic{'_imbalanced' if imbalanced else ''}{seed}"
    return _quiet(load_dataset, name, frame=frame, target="target", task="classification")


def _rank(x: np.ndarray) -> np.ndarray:
    x = np.where(np.isfinite(x), x, np.nanmedian(x))
    return rankdata(x) / len(x)


def candidates(ev: li.Evidence, values: pd.DataFrame) -> dict[str, np.ndarray]:
    """Every candidate score (higher = more likely flipped) from the run's own evidence."""
    p = ev.p_given
    t = ev.class_thresholds()[ev.labels]
    large = ev.p_given_large()
    v = values["shapley"].to_numpy(dtype=np.float64)
    mc = values["mc_mean"].to_numpy(dtype=np.float64)
    half = 0.5 * (values["shapley_high"] - values["shapley_low"]).to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_value = v / np.where(half > 0, half, np.nan)
    return {
        "1 - p_oob (self-confidence)": 1 - p,
        "t_y - p_oob (class-adjusted)": t - p,
        "1 - p_oob, larger half of the k range": 1 - large,
        "t_y - p_oob, larger half of k": ev.class_thresholds(large)[ev.labels] - large,
        "1 - share correct": 1 - ev.correct + 1e-3 * (1 - p),
        "-value (law)": -v,
        "-value / half-interval": -t_value,
        "-mc_mean": -mc,
        "rank mean: class-adjusted, -value": _rank(t - p) + _rank(-v),
        "rank mean: class-adjusted, -mc_mean": _rank(t - p) + _rank(-mc),
        "rank 2:1: class-adjusted, -value": 2 * _rank(t - p) + _rank(-v),
        "rank mean: 1 - p_oob, -value": _rank(1 - p) + _rank(-v),
        "rank 2:1: 1 - p_oob, -value": 2 * _rank(1 - p) + _rank(-v),
        "rank 2:1: 1 - p_oob, -mc_mean": 2 * _rank(1 - p) + _rank(-mc),
    }


def n_inputs(candidate: str) -> int:
    """1: out-of-bag evidence only; 2: combined with the law value or the plain mean; 3: those alone."""
    if candidate.startswith("rank"):
        return 2
    return 3 if ("value" in candidate or "mc_mean" in candidate) else 1


def choose(table: pd.DataFrame) -> tuple[str, str]:
    """(score candidate, rate rule) by the rules of the module docstring."""
    sc = table[table["kind"] == "score"].groupby("candidate")["auc"].mean()
    level = sc[sc >= sc.max() - MARGIN]
    score = min(level.index, key=lambda c: (n_inputs(c), -level[c]))
    rate = table[table["kind"] == "rate"].groupby("candidate")["abs_error"].mean().idxmin()
    return score, rate


def rates(ev: li.Evidence) -> dict[str, float]:
    """Every candidate noise-rate rule."""
    return {name: rule(ev) for name, rule in li.RATE_RULES.items()}


def main(argv: list[str] | None = None) -> int:
    rows = []
    for name, model, rate, seed in SETTINGS:
        full = synthetic(seed, name.endswith("imbalanced")) if name.startswith("synthetic") else None
        ds, flipped = flip_pool(name, seed, rate, full=full)
        ids = np.asarray([str(p) for p in ds.point_ids], dtype=object)
        truth = np.isin(ids, flipped)
        out = pointscale_evidence(ds, model, seed)
        ev = li.Evidence.from_oob(out["oob"], ids, np.asarray(ds.y_train), ds.n_classes)
        values = out["values"].reindex(ids)
        for cand, score in candidates(ev, values).items():
            s = np.where(np.isfinite(score), score, np.nanmedian(score))
            top = np.argsort(-s, kind="stable")[: int(truth.sum())]
            rows.append({"dataset": name, "model": model, "rate": rate, "seed": seed, "kind": "score",
                         "candidate": cand, "auc": roc_auc_score(truth, s), "p_at_true": truth[top].mean()})
        for cand, r in rates(ev).items():
            rows.append({"dataset": name, "model": model, "rate": rate, "seed": seed, "kind": "rate",
                         "candidate": cand, "est_rate": r, "abs_error": abs(r - truth.mean())})
        print(f"{name} {model} {rate} {seed}: done", flush=True)
        pd.DataFrame(rows).to_csv(OUT, index=False)
    table = pd.DataFrame(rows)
    print(markdown(table))
    return 0


def markdown(table: pd.DataFrame) -> str:
    sc = table[table["kind"] == "score"]
    by = sc.pivot_table(index="candidate", columns="dataset", values="auc", aggfunc="mean")
    by["mean AUC"] = sc.groupby("candidate")["auc"].mean()
    by["mean P@true"] = sc.groupby("candidate")["p_at_true"].mean()
    by = by.sort_values("mean AUC", ascending=False)
    rt = table[table["kind"] == "rate"]
    r = rt.pivot_table(index="candidate", columns="rate", values="est_rate", aggfunc="mean")
    r["mean |error|"] = rt.groupby("candidate")["abs_error"].mean()
    r = r.sort_values("mean |error|")
    score, rule = choose(table)
    n = table[table["kind"] == "score"].groupby(["dataset", "rate", "seed"]).ngroups
    return (f"{n} settings. Chosen score: **{score}**; noise-rate rule: **{rule}**.\n\n"
            + "Scores (ROC AUC for the flipped rows, mean over settings):\n\n" + _md(by, 3)
            + "\n\nNoise-rate rules (mean estimated rate per true rate):\n\n" + _md(r, 3) + "\n")


if __name__ == "__main__":
    sys.exit(main())
