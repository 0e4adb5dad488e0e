"""Every link of the documentation, and every docs/ path the code names, must exist.

Walks every Markdown link (`[text](target)`, `![alt](target)` and `[label]: target`; the text
may run over several lines) in README.md and in every .md file under docs/, resolved against the
folder of the file that holds it, and every `docs/...` path named in the project's Python files
(top level, bench/, envs/, scripts/, tests/), resolved against the project root. Web links
(http, https, mailto) and pure `#anchor` links are not checked; a `#anchor` after a path is
dropped (tests/test_docs_names.py checks anchors). Links inside code (fenced blocks and
`inline code`) are not links and are skipped.

A failure names the file, the line and the missing target. Reads files only; fast. The walkers
are tests/doc_walk.py's, shared with tests/test_docs_names.py.
"""

from __future__ import annotations

import re
from pathlib import Path

from doc_walk import links, markdown_files, python_files

ROOT = Path(__file__).resolve().parent.parent

# `docs/...` paths in the code that name a file a program writes, not one that must exist yet.
WRITTEN_LATER = {
    "docs/benchmark/gpu.md": "the gpu preset's report (bench/sample_efficiency.py), written by "
                             "its first run",
    "docs/benchmark/cpu.json": "the cpu preset's summary, which its committed report (older "
                               "than summaries) lacks: the --rerun refusal test names it",
    "docs/benchmark/oracle.md": "the oracle preset's report, published when its runs are done "
                                "(docs/benchmark/oracle_notes.md)",
}

_WEB = re.compile(r"^(https?:|mailto:|ftp:)", re.I)
# A docs/ path standing on its own (not the tail of a longer path) in Python source.
_CODE_PATH = re.compile(r"(?<![\w./-])docs/[\w./-]+\.(?:md|png|json|csv)")
# ... unless it is joined onto another folder: tmp_path / "docs/report.md".
_JOINED = re.compile(r"/\s*[rbuf]*[\"']$")


def markdown_targets(text: str) -> list[tuple[int, str]]:
    """(line, target) of every local link in a Markdown text, code left out."""
    return [(line, target) for line, target in links(text)
            if not (_WEB.match(target) or target.startswith("#"))]


def broken_markdown_links(files: list[Path], root: Path) -> list[str]:
    """One line per link whose target does not exist: 'file:line: target'."""
    broken = []
    for md in files:
        for line, target in markdown_targets(md.read_text(encoding="utf-8")):
            path = target.split("#", 1)[0].split("?", 1)[0]
            if not path:
                continue
            if not (md.parent / path).exists():
                broken.append(f"{md.relative_to(root)}:{line}: {target}")
    return broken


def code_doc_paths(text: str) -> list[tuple[int, str]]:
    """(line, path) of every docs/... path a Python text names on its own."""
    found = []
    for m in _CODE_PATH.finditer(text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        if _JOINED.search(text[line_start:m.start()]):
            continue
        found.append((text.count("\n", 0, m.start()) + 1, m.group(0).rstrip(".")))
    return found


def broken_code_paths(files: list[Path], root: Path) -> list[str]:
    broken = []
    for py in files:
        for line, path in code_doc_paths(py.read_text(encoding="utf-8")):
            if path in WRITTEN_LATER or (root / path).exists():
                continue
            broken.append(f"{py.relative_to(root)}:{line}: {path}")
    return broken


def test_every_markdown_link_exists():
    files = markdown_files(ROOT)
    assert ROOT / "README.md" in files
    broken = broken_markdown_links(files, ROOT)
    assert not broken, "Markdown links to files that do not exist:\n" + "\n".join(broken)


def test_every_docs_path_in_the_code_exists():
    # This file names made-up paths on purpose (the self-check below).
    files = [py for py in python_files(ROOT) if py != Path(__file__).resolve()]
    broken = broken_code_paths(files, ROOT)
    assert not broken, ("docs/ paths named in the code that do not exist:\n" + "\n".join(broken))


def test_the_checks_find_what_is_broken(tmp_path):
    """The walkers do fail: a broken link, a broken code path, and the cases they must skip."""
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "here.md").write_text("x")
    (tmp_path / "docs" / "sub" / "fig.png").write_text("x")
    (tmp_path / "README.md").write_text(
        "[ok](docs/here.md#top) ![fig](docs/sub/fig.png) [web](https://example.org/x.md)\n"
        "[anchor](#section) `[code](docs/inline.md)`\n"
        "```\n[fenced](docs/fenced.md)\n```\n"
        "[gone](docs/gone.md#a)\n"
        "[ref]: docs/missing_ref.md\n"
        "[a link over\ntwo lines](docs/two_lines.md) [not a link\n\nover a paragraph](docs/x.md)\n")
    (tmp_path / "docs" / "sub" / "page.md").write_text("[up](../here.md) [bad](here.md)\n")
    broken = broken_markdown_links(markdown_files(tmp_path), tmp_path)
    assert broken == ["README.md:6: docs/gone.md#a", "README.md:7: docs/missing_ref.md",
                      "README.md:9: docs/two_lines.md", "docs/sub/page.md:1: here.md"]

    (tmp_path / "tool.py").write_text(
        'A = "docs/here.md"\nB = "docs/nothing.md"\nC = tmp_path / "docs/report.md"\n'
        'D = "out/docs/other.md"\n')
    assert broken_code_paths(python_files(tmp_path), tmp_path) == ["tool.py:2: docs/nothing.md"]
