"""Walkers over the documentation's Markdown, shared by tests/test_links.py and
tests/test_docs_names.py. Reads files only; imports nothing of the project.

- `markdown_files(root)`: README.md and every .md file under docs/.
- `python_files(root)`: the project's Python files (top level, bench/, envs/, scripts/, tests/).
- `without_fences(text)`: the text with fenced blocks blanked (newlines kept, so line numbers
  stay right); `prose(text)`: with inline code blanked too, what is left is where Markdown
  finds links.
- `links(text)`: (line, target) of every link (`[text](target)`, `![alt](target)`,
  `[label]: target`) outside code; the link text may run over several lines.
- `code_spans(text)`: (line, content) of every inline code span outside fenced blocks.
- `fenced_blocks(text)`: (line of the opening fence, content) of every fenced block.
- `line_of(text, offset)`: the 1-based line of a character offset.
"""

from __future__ import annotations

import re
from pathlib import Path

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.S | re.M)
# An inline code span: a run of backticks, the content (it may run over a line end, not over a
# blank line), the same run again (CommonMark).
INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`)((?:[^\n]|\n(?![ \t]*\n))+?)(?<!`)\1(?!`)")
# The link text may hold inline code and run over several lines, but not over a blank line.
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\]\n]|\n(?!\s*\n))*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_LINK = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)


def _blank(match: re.Match) -> str:
    """The match with every character but newlines blanked, so offsets and lines stay right."""
    return re.sub(r"[^\n]", " ", match.group(0))


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def without_fences(text: str) -> str:
    """`text` with fenced blocks blanked."""
    return FENCE.sub(_blank, text)


def prose(text: str) -> str:
    """`text` with fenced blocks and inline code blanked."""
    return INLINE_CODE.sub(_blank, without_fences(text))


def links(text: str) -> list[tuple[int, str]]:
    """(line, target) of every link outside code, in order; web links and pure #anchors
    included (callers choose)."""
    text = prose(text)
    found = []
    for pattern in (_INLINE_LINK, _REF_LINK):
        for m in pattern.finditer(text):
            found.append((line_of(text, m.start(1)), m.group(1)))
    return sorted(found)


def code_spans(text: str) -> list[tuple[int, str]]:
    """(line, content) of every inline code span outside fenced blocks; a line end inside a
    span reads as a space (as Markdown renders it), and the content is stripped."""
    text = without_fences(text)
    return [(line_of(text, m.start()), " ".join(m.group(2).split()))
            for m in INLINE_CODE.finditer(text)]


def fenced_blocks(text: str) -> list[tuple[int, str]]:
    return [(line_of(text, m.start()), m.group(0)) for m in FENCE.finditer(text)]


def markdown_files(root: Path) -> list[Path]:
    readme = root / "README.md"
    return ([readme] if readme.exists() else []) + sorted((root / "docs").rglob("*.md"))


def python_files(root: Path) -> list[Path]:
    files = sorted(root.glob("*.py"))
    for folder in ("bench", "envs", "scripts", "tests"):
        files += sorted((root / folder).rglob("*.py"))
    return files
