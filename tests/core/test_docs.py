"""The front door stays short, and no link in README.md or docs/ points nowhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 150

#: ``[text](target)`` outside code; the target up to the first space or ``)``.
_LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)[^)]*\)|!\[[^\]]*\]\(([^)\s]+)[^)]*\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    return {_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", text, re.M)}


def broken_links(page: Path) -> list[str]:
    """The relative links of a Markdown page whose file (or heading) does not exist."""
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    broken = []
    for match in _LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
            continue  # an absolute URL (http:, mailto:, data:)
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif fragment and file.suffix == ".md" and fragment not in _anchors(file):
            broken.append(target)
    return broken


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; move detail to docs/ (at most {README_MAX_LINES})"


def test_every_relative_link_resolves():
    broken = {str(p.relative_to(ROOT)): broken_links(p) for p in _pages()}
    assert {k: v for k, v in broken.items() if v} == {}


def test_readme_links_every_docs_page():
    # A page nobody links to is a page nobody finds.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    unlinked = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"(docs/{p.name}" not in readme]
    assert unlinked == []


def test_link_check_finds_a_broken_link(tmp_path):
    (tmp_path / "there.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [ok](there.md#a-heading) [web](https://example.org/x) `[code](nope.md)`\n"
                    "[gone](missing.md) [no heading](there.md#nope)\n```\n[fenced](nope.md)\n```\n")
    assert broken_links(page) == ["missing.md", "there.md#nope"]


def test_readme_api_tour_runs(capsys):
    # The README's core API block is run as written: a renamed function breaks this test, not a reader.
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## The core API in five lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "value" in printed and len(printed.strip().splitlines()) == 6  # a header and five points
