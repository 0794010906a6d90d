r"""Label issues from the fits a run already made.

Every base model of a run is trained on a subset D of the pool and, at the
cost of a prediction, scores pool points outside D (the out-of-bag evidence,
:mod:`pointscale.sampling.oob`). For a point z with given label y that
evidence is the mean probability p(z) that models trained *without* z give
to y, per size bucket, and the share of them that predict y. A mislabelled
point is one the rest of the data disagrees with: p(z) is low.

Score
-----
``label_issue_score`` (higher = more likely a label problem) is the
self-confidence of the out-of-bag probabilities, s(z) = 1 − p(z): the
probability that models trained without z give to any label but z's own.

It was chosen among fourteen candidate combinations -- plain and
class-adjusted self-confidence (confident learning's per-class threshold
t_j, the mean p over the points labelled j, subtracted), the larger half of
the k range only, the share of correct predictions, the law value, its
ratio to its interval, the plain mean of Δ, and rank averages of the
out-of-bag score with the law value or the plain mean -- on breast_cancer,
digits and two synthetic tasks (balanced and 3:1) with 5 to 30 % flipped
labels, never on the benchmark's reported datasets
(``benchmarks/label_issue_selection.py``; the table is in
``docs/label_issues.md``). The rule: the best mean AUC, and among the
candidates within 0.005 of it the one with the fewest inputs. The
class-adjusted score loses most on imbalanced classes (uniform flips make
the minority class's points look suspicious only when they are), and no
combination with the law value or the plain mean was better by more than
the margin. No true label enters the score.

Flagged set and noise rate
--------------------------
The estimated number of label issues m is the off-diagonal count of
confident learning's confident joint (:func:`noise_rate`): a point labelled
i counts as confidently of class j ≠ i when its out-of-bag probability of j
reaches t_j, and as its own class when p(z) ≥ t_i (the larger margin wins
when both hold). The evidence holds the probability of the given label
only; the probability of any other class is at most 1 − p(z), with equality
for two classes, so with more classes the count uses that bound. Of the
four rules compared on the same data (this count, its calibration to the
class sizes, the share with p < 1/2, a two-component mixture of logit p)
it had the smallest mean error of the rate; it over-counts at low noise
(rows the model cannot fit look like issues too: 10 % estimated at 5 %
true, 14 % at 10 %, 22 % at 20 %, 30 % at 30 % in that comparison). The
flagged set is the m points
with the highest score, so it is a prefix of the ranking; the estimated
rate is m / n.

The suggested label is the other class for a binary task; with more classes
the evidence does not say which class (it records the given label's
probability only), so it is left empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..errors import DataError

__all__ = ["Evidence", "LabelIssues", "label_issues", "pool_label_issues", "label_issues_frame", "noise_rate",
           "RATE_RULES", "RATE_RULE", "THRESHOLD_RULE"]

#: What run.json records as the rule that sets the flagged set.
THRESHOLD_RULE = ("the m points with the highest label_issue_score, m = the off-diagonal count of confident "
                  "learning's confident joint on the out-of-bag probabilities (per-class thresholds t_j = mean "
                  "out-of-bag probability of class j among the points labelled j)")


@dataclass(frozen=True, eq=False)
class Evidence:
    """Out-of-bag evidence of a classification pool, aligned to its points.

    Attributes
    ----------
    point_ids : ndarray of shape (n,)
    labels : ndarray of int, shape (n,)
        The given labels as class codes 0 … n_classes − 1.
    n_classes : int
    p_given : ndarray of shape (n,)
        Mean out-of-bag probability of the given label (NaN without evidence).
    correct : ndarray of shape (n,)
        Share of out-of-bag predictions that were the given label.
    n_oob : ndarray of shape (n,)
        Number of out-of-bag predictions.
    p_buckets, n_buckets : ndarray of shape (n, B)
        The same per size bucket (NaN / 0 where a bucket is empty).
    """

    point_ids: np.ndarray
    labels: np.ndarray
    n_classes: int
    p_given: np.ndarray
    correct: np.ndarray
    n_oob: np.ndarray
    p_buckets: np.ndarray
    n_buckets: np.ndarray

    @classmethod
    def from_oob(cls, oob: pd.DataFrame, point_ids: Any, labels: Any, n_classes: int) -> "Evidence":
        """Align :func:`pointscale.sampling.oob_evidence`'s table to ``point_ids`` (labels in the same order)."""
        ids = np.asarray(point_ids, dtype=object)
        y = np.asarray(labels)
        if y.shape != ids.shape:
            raise DataError(f"{y.size} labels for {ids.size} points; pass one label per point")
        if n_classes < 2:
            raise DataError(f"label issues need at least two classes, got {n_classes}")
        frame = oob.set_index("point_id").reindex(ids)
        buckets = sorted((c for c in frame.columns if c.startswith("oob_score_b")), key=lambda c: int(c[11:]))
        n = frame["n_oob"].fillna(0).to_numpy(dtype=np.int64)
        p = np.where(n > 0, frame["oob_score"].to_numpy(dtype=np.float64), np.nan)
        return cls(point_ids=ids, labels=y.astype(np.int64), n_classes=int(n_classes), p_given=p,
                   correct=np.where(n > 0, frame["oob_correct"].to_numpy(dtype=np.float64), np.nan),
                   n_oob=n, p_buckets=frame[buckets].to_numpy(dtype=np.float64),
                   n_buckets=frame[[f"n_oob_b{c[11:]}" for c in buckets]].fillna(0).to_numpy(dtype=np.int64))

    def class_thresholds(self, p: np.ndarray | None = None) -> np.ndarray:
        """t_j: mean of ``p`` (default: :attr:`p_given`) over the points labelled j (NaN for an empty class)."""
        p = self.p_given if p is None else p
        ok = np.isfinite(p)
        total = np.bincount(self.labels[ok], weights=p[ok], minlength=self.n_classes)
        count = np.bincount(self.labels[ok], minlength=self.n_classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def p_given_large(self) -> np.ndarray:
        """Mean out-of-bag probability of the given label from the larger half of the size buckets only."""
        B = self.p_buckets.shape[1]
        hi = slice(B // 2, B)
        n = self.n_buckets[:, hi].astype(np.float64)
        s = np.nansum(np.nan_to_num(self.p_buckets[:, hi]) * n, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n.sum(axis=1) > 0, s / n.sum(axis=1), self.p_given)

    def score(self) -> np.ndarray:
        """``label_issue_score``: 1 − p (see the module docstring); NaN without evidence."""
        return 1.0 - self.p_given


def _confident_joint(ev: Evidence) -> np.ndarray:
    """Confident joint C[i, j] (given i, confidently j) from the given label's probability.

    A point labelled i counts for its own class when p ≥ t_i, for j ≠ i when
    1 − p ≥ t_j (exact for two classes, the bound for more), the class with
    the larger margin over its threshold when both hold.
    """
    t = ev.class_thresholds()
    C = np.zeros((ev.n_classes, ev.n_classes))
    ok = np.isfinite(ev.p_given)
    for i in range(ev.n_classes):
        p = ev.p_given[ok & (ev.labels == i)]
        if p.size == 0:
            continue
        others = [j for j in range(ev.n_classes) if j != i and np.isfinite(t[j])]
        own = p - t[i]
        other = np.full(p.size, -np.inf)
        which = np.full(p.size, -1)
        for j in others:  # with the bound 1 - p for every other class, the lowest threshold wins
            m = (1 - p) - t[j]
            better = m > other
            other, which = np.where(better, m, other), np.where(better, j, which)
        to_other = (other >= 0) & ~((own >= 0) & (own >= other))
        C[i, i] = np.sum((own >= 0) & ~to_other)
        for j in others:
            C[i, j] = np.sum(to_other & (which == j))
    return C


def _rate_cl_count(ev: Evidence) -> float:
    C = _confident_joint(ev)
    return float((C.sum() - np.trace(C)) / max(1, np.isfinite(ev.p_given).sum()))


def _rate_cl_calibrated(ev: Evidence) -> float:
    C = _confident_joint(ev)
    counts = np.bincount(ev.labels[np.isfinite(ev.p_given)], minlength=ev.n_classes).astype(np.float64)
    rows = C.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cal = np.where(rows[:, None] > 0, C / rows[:, None] * counts[:, None], 0.0)
    return float((cal.sum() - np.trace(cal)) / max(1.0, counts.sum()))


def _rate_below_half(ev: Evidence) -> float:
    p = ev.p_given[np.isfinite(ev.p_given)]
    return float(np.mean(p < 0.5)) if p.size else float("nan")


def _rate_mixture(ev: Evidence) -> float:
    """Weight of the lower component of a two-component Gaussian mixture of logit p."""
    from sklearn.mixture import GaussianMixture

    p = np.clip(ev.p_given[np.isfinite(ev.p_given)], 1e-4, 1 - 1e-4)
    if p.size < 10:
        return float("nan")
    x = np.log(p / (1 - p))[:, None]
    gm = GaussianMixture(2, random_state=0).fit(x)
    return float(gm.weights_[int(np.argmin(gm.means_[:, 0]))])


#: Candidate noise-rate rules, compared in ``benchmarks/label_issue_selection.py``.
RATE_RULES: dict[str, Callable[[Evidence], float]] = {
    "confident joint, off-diagonal count": _rate_cl_count,
    "confident joint, calibrated": _rate_cl_calibrated,
    "share with p_oob < 1/2": _rate_below_half,
    "two-component mixture of logit p_oob": _rate_mixture,
}

#: The rule the product uses.
RATE_RULE = "confident joint, off-diagonal count"


def noise_rate(ev: Evidence) -> float:
    """Estimated share of mislabelled points (:data:`RATE_RULE`)."""
    return RATE_RULES[RATE_RULE](ev)


@dataclass(frozen=True, eq=False)
class LabelIssues:
    """Label-issue scores, the flagged set and the estimated noise rate of a pool.

    Attributes
    ----------
    table : DataFrame
        One row per point: ``point_id``, ``label_issue_score``, ``given_label``,
        ``suggested_label`` (class codes; the suggestion is <NA> where the
        evidence does not name a class) and ``flagged``.
    noise_rate : float
        Estimated share of mislabelled points (flagged / points with evidence).
    n_flagged : int
    rule : str
        How the flagged set is chosen (:data:`THRESHOLD_RULE`).
    """

    table: pd.DataFrame
    noise_rate: float
    n_flagged: int
    rule: str = THRESHOLD_RULE

    def flagged(self) -> pd.DataFrame:
        """The flagged rows, highest score first."""
        t = self.table[self.table["flagged"]]
        return t.sort_values("label_issue_score", ascending=False, kind="stable").reset_index(drop=True)

    def summary(self) -> dict[str, Any]:
        return {"n_flagged": int(self.n_flagged), "noise_rate": round(float(self.noise_rate), 4),
                "n_points": int(self.table["label_issue_score"].notna().sum()), "rule": self.rule}


def label_issues(oob: pd.DataFrame, point_ids: Any, labels: Any, n_classes: int) -> LabelIssues:
    """Score every point for a label problem, estimate the noise rate, flag the likeliest.

    Parameters
    ----------
    oob : DataFrame
        Out-of-bag evidence (:func:`pointscale.sampling.oob_evidence`).
    point_ids : array-like of shape (n,)
        The points to score (those without evidence get NaN and are never flagged).
    labels : array-like of int, shape (n,)
        Their given labels as class codes.
    n_classes : int

    Returns
    -------
    LabelIssues
    """
    ev = Evidence.from_oob(oob, point_ids, labels, n_classes)
    score = ev.score()
    has = np.isfinite(score)
    rate = noise_rate(ev) if has.any() else 0.0
    m = int(round(rate * has.sum()))
    order = np.argsort(np.where(has, -score, np.inf), kind="stable")
    flagged = np.zeros(score.size, dtype=bool)
    flagged[order[:m]] = True
    if n_classes == 2:
        suggested = pd.array(np.where(flagged, 1 - ev.labels, ev.labels), dtype="Int64")
    else:
        suggested = pd.array(np.where(flagged, pd.NA, ev.labels), dtype="Int64")
    table = pd.DataFrame({"point_id": ev.point_ids, "label_issue_score": score,
                          "given_label": ev.labels, "suggested_label": suggested, "flagged": flagged})
    return LabelIssues(table=table, noise_rate=m / max(1, int(has.sum())), n_flagged=m)


def pool_label_issues(oob: pd.DataFrame | None, dataset: Any) -> LabelIssues | None:
    """:func:`label_issues` for every point of a dataset's training pool; None for regression or without evidence."""
    if oob is None or len(oob) == 0 or getattr(dataset, "task", None) != "classification":
        return None
    ids = np.asarray([str(p) for p in np.asarray(dataset.point_ids)], dtype=object)
    return label_issues(oob, ids, np.asarray(dataset.y_train), int(dataset.n_classes))


def label_issues_frame(issues: LabelIssues, classes: Any = None) -> pd.DataFrame:
    """The flagged rows as ``label_issues.csv`` holds them: ``point_id``, ``label_issue_score``,
    ``given_label`` and ``suggested_label`` (class names when ``classes`` is given), highest score first."""
    f = issues.flagged()
    out = pd.DataFrame({"point_id": f["point_id"], "label_issue_score": f["label_issue_score"]})
    for col in ("given_label", "suggested_label"):
        codes = f[col].astype("Int64")
        if classes is None:
            out[col] = codes
        else:
            names = np.asarray(classes, dtype=object)
            out[col] = [names[int(c)] if pd.notna(c) else None for c in codes]
    return out
