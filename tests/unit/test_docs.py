"""The repository documents itself: nothing in it points outside it, and every docs/ page it names exists.

The team's design notes live outside the repository; a user who clones it does not have them. So no shipped file
(package, docs, examples, benchmarks, README) may cite them, and every ``docs/….md`` path that the README, the
docs or the code mention must be a file in the repository.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: What a user who clones the repository ships with: these trees and the README.
SHIPPED = ("formation", "docs", "examples", "bench", "README.md")

#: Citations of notes outside the repository (case-sensitive: ``docs/domain.md`` is ours, ``DOMAIN.md`` is not).
OUTSIDE_NOTES = re.compile(r"\.\./shared|DESIGN\.md|DOMAIN\.md|STYLE\.md|issue3-contracts|\bDESIGN §")

#: A repository path to a docs page, e.g. ``docs/decisions/0001-instrument-owns-step-ends.md``.
DOCS_PATH = re.compile(r"(?<![\w./-])docs/[\w./-]*?\.md\b")

#: A relative Markdown link target ending in .md, e.g. ``[0001](decisions/0001-….md)``.
MD_LINK = re.compile(r"\]\((?!https?:|#|/)([^)#\s]+\.md)(?:#[^)]*)?\)")

_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def _text_files(*entries: str) -> Iterator[Path]:
    """Every readable text file under ``entries`` (files or directories relative to the repository root)."""
    for entry in entries:
        path = ROOT / entry
        if path.is_file():
            yield path
            continue
        for file in sorted(path.rglob("*")):
            if file.is_file() and not _SKIP_DIRS.intersection(file.relative_to(ROOT).parts):
                yield file


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return  # binary files (images, parquet) cite nothing
    yield from enumerate(text.splitlines(), start=1)


def _where(path: Path, number: int, line: str) -> str:
    return f"{path.relative_to(ROOT)}:{number}: {line.strip()}"


def _markdown_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_nothing_shipped_cites_notes_outside_the_repository() -> None:
    offenders = [
        _where(path, number, line)
        for path in _text_files(*SHIPPED)
        for number, line in _lines(path)
        if OUTSIDE_NOTES.search(line)
    ]
    assert not offenders, "cite docs/domain.md or docs/architecture.md instead:\n" + "\n".join(offenders)


def test_every_docs_page_named_exists() -> None:
    missing = [
        f"{_where(path, number, line)}  ->  {name}"
        for path in _text_files(*SHIPPED)
        for number, line in _lines(path)
        for name in DOCS_PATH.findall(line)
        if not (ROOT / name).is_file()
    ]
    assert not missing, "docs pages named but not in the repository:\n" + "\n".join(missing)


def test_relative_markdown_links_resolve() -> None:
    broken = [
        f"{_where(page, number, line)}  ->  {target}"
        for page in _markdown_pages()
        for number, line in _lines(page)
        for target in MD_LINK.findall(line)
        if not (page.parent / target).resolve().is_file()
    ]
    assert not broken, "relative links to missing pages:\n" + "\n".join(broken)


def test_the_patterns_catch_what_they_are_for() -> None:
    for cited in (
        "see ../shared/DESIGN.md",
        "(DOMAIN.md)",
        "STYLE.md habit 11",
        "Kinds of DESIGN §3",
        "docs/issue3-contracts.md",
    ):
        assert OUTSIDE_NOTES.search(cited), cited
    for ours in ("docs/domain.md", "docs/architecture.md", "the design of the writer", "DESIGN"):
        assert not OUTSIDE_NOTES.search(ours), ours
    assert DOCS_PATH.findall("see `docs/decisions/0001-x.md`, and docs/grading-report.md.") == [
        "docs/decisions/0001-x.md",
        "docs/grading-report.md",
    ]
    assert DOCS_PATH.findall("../docs/x.md and formation/docs/y.md") == []
    assert MD_LINK.findall("[a](decisions/0001-x.md) [b](https://x.org/y.md) [c](#top)") == ["decisions/0001-x.md"]
