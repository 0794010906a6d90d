"""Label issues from out-of-bag evidence: score, confident joint, flagged set, a real run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pointscale.errors import DataError
from pointscale.sampling import SamplingConfig, plan_blocks, sample_blocks
from pointscale.sampling.ledger import summarize
from pointscale.sampling.oob import N_BUCKETS
from pointscale.valuation import flip_labels
from pointscale.valuation import label_issues as li


def _oob(ids, p, n=20):
    """An evidence table (the columns of oob_evidence) with mean score p and n predictions per point."""
    frame = pd.DataFrame({"point_id": np.asarray(ids, dtype=object), "n_oob": n, "oob_score": p,
                          "oob_correct": (np.asarray(p) > 0.5).astype(float)})
    for j in range(N_BUCKETS):
        frame[f"n_oob_b{j}"] = n // N_BUCKETS
        frame[f"oob_score_b{j}"] = p
    return frame


def test_confident_joint_matches_a_hand_count():
    # Two classes; t_0 = mean(0.9, 0.8, 0.1) = 0.6, t_1 = mean(0.7, 0.3) = 0.5.
    # Labelled 0: p=0.9 (own margin .3 >= 0, other 1-.9-.5 < 0) -> C[0,0];
    #             p=0.8 -> C[0,0]; p=0.1: own -.5, other .9-.5=.4 -> C[0,1].
    # Labelled 1: p=0.7: own .2, other .3-.6 < 0 -> C[1,1]; p=0.3: own -.2, other .7-.6=.1 -> C[1,0].
    ids = ["a", "b", "c", "d", "e"]
    ev = li.Evidence.from_oob(_oob(ids, [0.9, 0.8, 0.1, 0.7, 0.3]), ids, [0, 0, 0, 1, 1], 2)
    np.testing.assert_allclose(ev.class_thresholds(), [0.6, 0.5])
    np.testing.assert_array_equal(li._confident_joint(ev), [[2, 1], [1, 1]])
    # Calibrated: rows rescaled to the class counts (3 and 2): off-diagonal 1 + 1 of 5 points.
    assert li.RATE_RULES["confident joint, calibrated"](ev) == pytest.approx(2 / 5)
    # The product's rule, the plain off-diagonal count: 2 of 5 points.
    assert li.noise_rate(ev) == pytest.approx(2 / 5)


def test_planted_noise_is_ranked_and_counted():
    # Evidence as a model trained on noisy labels would give it: a point's true
    # class has probability q ~ Beta(6, 2) under the clean model; with a share
    # rho of labels flipped the model's probability of the *observed* label is
    # (1 - rho) q + rho (1 - q) for a clean point and (1 - rho)(1 - q) + rho q
    # for a flipped one. 3:1 classes, 2,000 points.
    g = np.random.default_rng(0)
    n, rho = 2000, 0.1
    y_true = (g.random(n) < 0.25).astype(int)
    flipped = g.random(n) < rho
    y = np.where(flipped, 1 - y_true, y_true)
    q = g.beta(6, 2, n)
    p = np.where(flipped, (1 - rho) * (1 - q) + rho * q, (1 - rho) * q + rho * (1 - q))
    ids = [f"p{i}" for i in range(n)]
    res = li.label_issues(_oob(ids, p), ids, y, 2)
    t = res.table
    # q ~ Beta(6, 2) puts 6 % of points below 1/2, so the flipped are well but not perfectly separated.
    assert roc_auc_score(flipped, t["label_issue_score"]) > 0.9
    # The estimated rate is the share flagged and within a factor 1.5 of the truth (10.2 % here):
    # points of the ambiguous region are counted as issues too.
    assert res.noise_rate == pytest.approx(t["flagged"].mean())
    assert flipped.mean() / 1.5 < res.noise_rate < 1.5 * flipped.mean()
    # The flagged set is the top of the ranking and suggests the other class.
    s = t["label_issue_score"].to_numpy()
    assert s[t["flagged"]].min() >= s[~t["flagged"]].max()
    f = t[t["flagged"]]
    assert (f["suggested_label"].to_numpy(dtype=int) == 1 - f["given_label"].to_numpy()).all()
    ok = t[~t["flagged"]]
    assert (ok["suggested_label"].to_numpy(dtype=int) == ok["given_label"].to_numpy()).all()
    assert list(res.flagged()["label_issue_score"]) == sorted(f["label_issue_score"], reverse=True)


def test_points_without_evidence_are_never_flagged():
    ids = ["a", "b", "c", "d"]
    oob = _oob(ids[:3], [0.9, 0.1, 0.8])
    res = li.label_issues(oob, ids, [0, 0, 1, 1], 2)
    t = res.table.set_index("point_id")
    assert np.isnan(t.loc["d", "label_issue_score"]) and not t.loc["d", "flagged"]
    assert res.summary()["n_points"] == 3


def test_more_classes_leave_the_suggestion_empty():
    ids = [f"p{i}" for i in range(9)]
    p = [0.9, 0.8, 0.05, 0.9, 0.85, 0.8, 0.9, 0.7, 0.8]
    res = li.label_issues(_oob(ids, p), ids, [0, 0, 0, 1, 1, 1, 2, 2, 2], 3)
    t = res.table.set_index("point_id")
    assert t.loc["p2", "flagged"] and pd.isna(t.loc["p2", "suggested_label"])
    assert t["label_issue_score"].idxmax() == "p2"


def test_labels_must_match_the_points():
    with pytest.raises(DataError, match="labels for"):
        li.label_issues(_oob(["a"], [0.5]), ["a", "b"], [0], 2)


def test_a_real_run_finds_the_flipped_labels(cancer):
    # 10 % of breast_cancer's pool flipped; the score comes from the sampling's
    # own out-of-bag evidence (no extra fit). Breast cancer is nearly separable
    # with logistic regression, so 0.9 leaves room for the small sample (31 flipped).
    noisy, flipped = flip_labels(cancer, list(cancer.point_ids), 0.1, seed=2)
    cfg = SamplingConfig(model="logreg", k_min=40, k_max=120, samples_per_point=4, block_size=32, seed=2)
    res = sample_blocks(noisy, cfg, plan_blocks(noisy, cfg))
    ids = [str(p) for p in noisy.point_ids]
    out = li.label_issues(summarize(res.oob), ids, np.asarray(noisy.y_train), noisy.n_classes)
    truth = np.isin(np.asarray(ids, dtype=object), flipped)
    assert roc_auc_score(truth, out.table["label_issue_score"]) > 0.9
    # The flagged set holds most flips and not many more rows than there are flips.
    f = out.table["flagged"].to_numpy()
    assert truth[f].sum() >= 0.6 * truth.sum() and f.sum() <= 2 * truth.sum()


def test_the_report_and_the_terminal_say_how_many_rows_look_wrong(tmp_path):
    from pointscale.report import report_summary, write_report

    summary = {"n_flagged": 103, "n_points": 1000, "noise_rate": 0.103, "rule": li.THRESHOLD_RULE,
               "file": "label_issues.csv"}
    line = "label issues: 103 of 1,000 rows look mislabelled (estimated noise rate 10.3%; list in label_issues.csv)"
    assert line in report_summary(manifest={"label_issues": summary}).splitlines()
    flagged = pd.DataFrame({"point_id": ["a", "b"], "label_issue_score": [0.97, 0.9],
                            "given_label": ["yes", "no"], "suggested_label": ["no", "yes"]})
    text = write_report(tmp_path, manifest={"label_issues": summary}, label_issues=flagged).read_text()
    section = text.split("## Label issues", 1)[1]
    assert "103 of 1,000 rows" in section and li.THRESHOLD_RULE in section
    assert "| a | 0.97 | yes | no |" in section
    # Without the summary (a regression run, or no evidence) there is no section and no line.
    assert "Label issues" not in write_report(tmp_path, manifest={}).read_text()
