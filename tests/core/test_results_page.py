"""docs/results.md is written from the committed tables in docs/results/ alone, byte for byte."""

from pathlib import Path

import pandas as pd

from reproduction.settle_page import read_tables, render
from reproduction.verdicts import VERDICTS

ROOT = Path(__file__).resolve().parents[2]


def test_page_regenerates_byte_for_byte_from_the_committed_tables():
    page = (ROOT / "docs" / "results.md").read_text()
    assert render(read_tables(ROOT / "docs" / "results")) == page


def test_verdicts_csv_has_the_agreed_columns_and_words():
    v = pd.read_csv(ROOT / "docs" / "results" / "verdicts.csv")
    assert list(v.columns) == ["finding", "dataset", "model", "config", "statistic", "value", "ceiling", "ci_low",
                               "ci_high", "verdict"]
    assert set(v["verdict"]) <= set(VERDICTS)
    assert not v.empty


def test_docs_name_no_absolute_path():
    for p in [ROOT / "docs" / "results.md", *(ROOT / "docs" / "results").glob("*.csv")]:
        text = p.read_text()
        for prefix in ("/work/", "/home/", "/tmp/", "/root/"):
            assert prefix not in text, f"{p.name} names {prefix}"
