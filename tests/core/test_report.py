"""report.md, its figures and the short summaries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pointscale.laws.result import FittedScalingLaws
from pointscale.report import harmful_points, markdown_table, report_summary, top_bottom_points, write_report
from pointscale.valuation import select_points, values_table

PNG = b"\x89PNG\r\n\x1a\n"


class _Data:
    name = "toy"
    task = "classification"
    n_classes = 2
    fingerprint = "abcdef0123456789"

    def __init__(self, n):
        self.point_ids = np.array([f"p{i:02d}" for i in range(n)], dtype=object)
        self.y_train = np.arange(n) % 2
        self.classes = np.array(["no", "yes"], dtype=object)
        self.n_pool = n


@pytest.fixture()
def run():
    n = 30
    data = _Data(n)
    g = np.random.default_rng(0)
    c = np.abs(g.normal(0.3, 0.3, n)) + 0.01
    c[:3] = [-0.5, -0.2, -0.05]
    alpha = g.uniform(0.8, 2.0, n)
    alpha[:3] = 1.2
    laws = FittedScalingLaws(
        point_ids=data.point_ids, c=c, alpha=alpha, sigma=np.ones(n), beta=np.full(n, 2.0),
        nll=np.zeros(n), n_samples=np.full(n, 20), estimator="mle", k_range=(10, 100),
        alpha_low=alpha - 0.2, alpha_high=alpha + 0.2, c_low=c - 0.1, c_high=c + 0.1,
        extra={"var_c": np.full(n, 0.0025), "var_alpha": np.full(n, 0.01), "cov_c_alpha": np.zeros(n)},
        flags={"poor_fit": np.isin(np.arange(n), [1, 5])},
    )
    samples = pd.DataFrame({"point_id": np.repeat(data.point_ids, 4), "k": np.tile([10, 40, 70, 100], n),
                            "delta": g.normal(0, 0.01, 4 * n) + np.repeat(c / 30, 4)})
    values = values_table(laws, data, k_min=10, k_max=100, samples=samples)
    return data, laws, values


def test_full_report_writes_every_figure(tmp_path, run):
    data, laws, values = run
    selection = select_points(laws, 30, 6, labels=data.y_train)
    summary = pd.DataFrame({
        "regime": ["small"] * 2 + ["large"] * 2, "n_initial": [10, 10, 50, 50],
        "ranking": ["size_small", "random"] * 2, "m": 5, "mean_gain": [0.03, 0.01, 0.02, 0.0],
        "se_gain": 0.005, "mean_gain_vs_random": [0.02, 0.0, 0.02, 0.0], "se_gain_vs_random": 0.004,
        "n_repeats": 5, "n_failed": 0,
    })
    removal = pd.DataFrame({"strategy": ["lowest_first"] * 2 + ["random"] * 2, "fraction": [0.0, 0.2] * 2,
                            "n_removed": [0, 6] * 2, "score": [0.9, 0.93, 0.9, 0.89], "se": [np.nan, np.nan, 0, 0.01],
                            "n_failed": 0})
    noisy = {"auc_shapley": 0.91, "auc_c": 0.88, "auc_monte_carlo": 0.8, "n_points": 30, "n_flipped": 3,
             "flip_fraction": 0.1, "negative_c_precision": 0.5, "negative_c_recall": 1.0}
    evaluation = pd.DataFrame({"method": ["mle", "monte_carlo"], "target": ["shapley", "shapley"], "n_points": 30,
                               "explained_variance": [0.8, 0.4], "pearson": [0.9, 0.7], "spearman": [0.88, 0.6],
                               "sign_agreement": [0.9, 0.8]})
    path = write_report(tmp_path, dataset=data, laws=laws, values=values, selection=selection,
                        experiments={"point_addition": summary, "removal": removal, "noisy_label": noisy},
                        evaluation=evaluation, manifest={"config_hash": "deadbeef", "counts": {"samples": 120}})
    assert path == tmp_path / "report.md"
    text = path.read_text()
    figs = ["alpha_hist.png", "psi_curves.png", "value_vs_mc.png", "selection_gains.png", "removal_curves.png"]
    for name in figs:
        f = tmp_path / "figures" / name
        assert f.read_bytes()[:8] == PNG, name
        assert f"figures/{name}" in text
    for heading in ("## Most and least valuable points", "## Harmful points", "## Selected points",
                    "## Point addition", "## Removal curves", "## Noisy-label check",
                    "## Accuracy against ground truth", "## Run"):
        assert heading in text, heading
    # the three planted harmful points are listed, the most harmful first
    harm = text.split("## Harmful points")[1].split("##")[0]
    assert harm.index("p00") < harm.index("p01") < harm.index("p02")
    assert "0.91" in text and "deadbeef" in text
    assert harm.split("p01")[1].split("\n")[0].rstrip(" |").endswith("poor_fit")  # its flag is shown
    assert not list(tmp_path.glob("**/*.tmp"))  # atomic writes leave no debris


def test_minimal_report_draws_only_what_it_has(tmp_path, run):
    data, laws, values = run
    v = values.drop(columns=["mc_mean", "mc_se", "mc_n"])
    write_report(tmp_path, dataset="toy", laws=None, values=v)
    names = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert names == ["alpha_hist.png", "psi_curves.png"]
    text = (tmp_path / "report.md").read_text()
    assert "## Point addition" not in text and "## Selected points" not in text


def test_top_bottom_points_and_summary(run):
    data, laws, values = run
    rows = top_bottom_points(values, 5)
    top = [r for r in rows if r["group"] == "top"]
    bottom = [r for r in rows if r["group"] == "bottom"]
    order = values.sort_values("shapley", ascending=False)["point_id"].tolist()
    assert [r["point_id"] for r in top] == order[:5]
    assert [r["point_id"] for r in bottom] == order[::-1][:5]
    assert bottom[0]["rank"] == len(values) and isinstance(top[0]["shapley"], float)
    # with n larger than half, no point appears twice
    rows = top_bottom_points(values, 20)
    assert len({r["point_id"] for r in rows}) == len(rows) == len(values)
    s = report_summary(dataset=data, values=values,
                       experiments={"noisy_label": {"auc_shapley": 0.9, "auc_monte_carlo": 0.7}})
    assert "Valued 30 points: values from per-point maximum likelihood" in s and "negative c (harmful): 3 points" in s and "0.900" in s
    assert len(harmful_points(values)) == 3


def test_markdown_table_escapes_and_formats():
    t = markdown_table(pd.DataFrame({"a": ["x|y"], "b": [1.23456789e-6], "c": [np.nan], "d": [True]}))
    assert t.splitlines()[2] == "| x\\|y | 1.235e-06 | – | yes |"


def test_inline_figures_embed_the_report_images(tmp_path, run):
    import base64
    import re

    from pointscale.report import inline_figures

    data, laws, values = run
    path = write_report(tmp_path, dataset=data, laws=laws, values=values)
    text = path.read_text()
    linked = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", text)
    assert linked, "the report links figures"
    inlined = inline_figures(text, tmp_path)
    assert "](figures/" not in inlined  # no relative image link is left for a viewer to break on
    embedded = re.findall(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", inlined)
    assert [base64.b64decode(e) for e in embedded] == [(tmp_path / f).read_bytes() for f in linked]
    # A link to a missing file stays as it was (never a made-up image).
    assert inline_figures("![x](figures/missing.png)", tmp_path) == "![x](figures/missing.png)"


def test_views_round_numbers_and_list_only_current_outputs(tmp_path, run):
    import re

    from pointscale.report.views import outputs_view, values_change_view, values_view

    data, laws, values = run
    view = values_view(values, 5)
    assert "Most valuable 5" in view and "Least valuable 5" in view
    numbers = re.findall(r"-?\d+\.\d+(?:e-?\d+)?", view)
    assert numbers and all(len(n.split("e")[0].lstrip("-").replace(".", "").lstrip("0")) <= 4 for n in numbers)
    (tmp_path / "values.parquet").write_bytes(b"x" * 2048)
    (tmp_path / "laws_amortized.parquet").write_bytes(b"left over from an earlier run")
    manifest = {"outputs": {"values": {"files": {"values.parquet": "ab" * 32}}, "laws_amortized": None}}
    text = outputs_view(tmp_path, manifest)
    assert "| values.parquet |" in text and "2.0 kB" in text and str(tmp_path) in text
    assert "laws_amortized.parquet" not in text.split("Not part of this run")[0]
    assert "`laws_amortized`" in text and "file://" not in text
    change = pd.DataFrame({"point_id": ["a", "b"], "shapley_before": [0.1, 0.2], "shapley_after": [0.3, 0.1],
                           "change": [0.2, -0.1]})
    before_after = values_change_view(change, {"points_compared": 2, "points_new": 1,
                                               "spearman_before_after": -1.0, "median_abs_change": 0.15})
    assert before_after.index("| a |") < before_after.index("| b |")  # largest move first
    assert "new points: 1" in before_after


def test_value_vs_monte_carlo_with_equal_values_warns_nothing_and_says_why(tmp_path):
    # A shrunk mean with no between-point spread gives every point the same value: Pearson is undefined,
    # and numpy's "invalid value encountered in divide" used to reach the user's terminal.
    import warnings

    from pointscale.report.figures import value_vs_monte_carlo

    values = pd.DataFrame({"shapley": np.full(6, 0.002), "mc_mean": np.linspace(0.0, 0.004, 6)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = value_vs_monte_carlo(values, tmp_path / "v.png")
    assert path is not None and path.stat().st_size > 0


def test_summary_says_when_the_exponents_sit_at_their_upper_bound():
    # Shrinkage at 10-30 samples per point on non-linear models can put every point's alpha at e²
    # (the estimator benchmark's collapsed populations): the summary must say the values are not pinned down.
    from pointscale.laws.likelihood import PARAM_MAX

    ids = [f"p{i}" for i in range(10)]
    base = pd.DataFrame({"point_id": ids, "shapley": np.linspace(-1e-3, 1e-3, 10), "c": 1.0,
                         "estimator": "shrinkage"})
    stuck = report_summary(values=base.assign(alpha=np.r_[np.full(8, PARAM_MAX - 0.004), 0.5, 1.0]))
    assert "alpha at its upper bound (e² = 7.39) for 80% of points" in stuck
    fine = report_summary(values=base.assign(alpha=np.linspace(0.2, 1.5, 10)))
    assert "upper bound" not in fine
