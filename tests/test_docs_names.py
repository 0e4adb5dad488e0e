"""Every code name the documentation writes in backticks, and every #anchor of its links, must
resolve: docs that cannot drift from the code (issue 33).

Reads README.md and every .md file under docs/ (tests/doc_walk.py's walkers) and the project's
Python files with `ast`: nothing is imported, so no TensorFlow; fast.

The project's modules: every top-level *.py file (`valuerl`), the packages at the top level and
their modules (`learning`, `learning.oracle`), bench/*.py and scripts/*.py as `bench.x` and
`scripts.x`, and the shared test modules tests/*.py other than test_*.py and conftest.py
(`pipeline_stubs`: configs may name them, pyproject.toml puts tests/ on the path). A project
class is a class statement at any depth of any of the project's Python files (top level, the
packages, bench/, scripts/, tests/).

What a module defines: its top-level `def`, `class` and assignment targets (with those inside
top-level `if`/`try`/`with` blocks). What it imports does not count: a doc names the module
that defines a thing (`learning.settings.Td3`, not `valuerl.Td3`). What a class defines: its
methods, nested classes, class-level assignments and annotations (NamedTuple and dataclass
fields), every `self.x` its methods assign, and all of these of its bases that are project
classes (bases from outside the project, such as `tf.Module`, are not followed).

What is checked: each inline code span as a whole (surrounding quotes stripped, a trailing call
such as `(...)` dropped) is read by the first of rules 1-4 and 6 that matches it, and rule 5
checks its words besides:
1. File names: a span whose last dotted part is a file suffix (`valuerl.log`, `hps.json`,
   `config.py`) is not a code name; see 5 for which paths must exist.
2. `module.name[.attr...]`: the first part (or the longest dotted prefix) is a project module,
   `bench.x` / `scripts.x` needs bench/x.py / scripts/x.py; `name` must be defined by the
   module, and each further part must be a member of the class before it.
3. `Class.member[.attr...]`: the first part is a project class; `member` must be defined by it
   (or, when several project classes share the name, by one of them).
4. `module:name` role strings (`valuerl_learner:ValueRLLearner`): the module part is a project
   module, `name` must be defined by it; `path.py::name[::member]` pytest node ids: the file
   must exist and define `name` (and the class `name`, `member`).
5. Paths ending in .py or .json, each whitespace-separated word of a span and of a fenced block:
   a path starting with one of the project's folders (PROJECT_FOLDERS) is read from the project
   root and must exist; a bare `x.py` must be the name of one of the project's Python files.
   `<placeholder>` and `*` match any name, `{a,b}` expands; each expansion must match a file.
   Other .json and relative paths (`hps.json`, `log/hps.json`, `algos/td3.json`, named
   relative to a folder the text names) and absolute paths are not checked.
6. A bare private name (`_upper`: one leading underscore, then an identifier) must be defined
   somewhere in the project: a def, class, assigned name or assigned attribute at any depth. A
   bare test name (`test_pure_targets_match_numpy`) must be a function of a tests/test_*.py.
Anything else is not a code name and is not checked: config keys (`policy_config.backbone`,
`td3.tau`: their first part is no module and no class), TensorBoard tags (`charts/mean_q`),
shell commands, flags, numbers, third-party names (`tf.function`, `mujoco.rollout`), bare
public names (`act`, `rollout`: they may as well be config keys), and `X.y` where X is not a
project class (`Checkpoint.read`, TensorFlow's).

Anchors: every link `page.md#anchor` (resolved against the linking file's folder) and `#anchor`
(the same page) outside code must name a heading of its page, by GitHub's slug rules: the
heading's rendered text (link targets, inline code marks, `*` and `~` and HTML tags left out),
lowercased, every character other than a letter, digit, '-', '_' or space dropped, spaces to
'-'; a slug already taken gets -1, -2, ... (`<a name=...>` / `id=` anchors count too). Links to
pages that do not exist are tests/test_links.py's.

EXCEPTIONS lists (file, span) pairs that may stay unresolved, each with its reason.
"""

from __future__ import annotations

import ast
import functools
import glob
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from doc_walk import code_spans, fenced_blocks, links, markdown_files, without_fences

ROOT = Path(__file__).resolve().parent.parent

# The folders whose paths a doc names from the project root (rule 5).
PROJECT_FOLDERS = ("bench", "cluster", "config", "docs", "envs", "learning", "process",
                   "reports", "scripts", "tests")
# The last dotted part of a file name, never of a code name (rule 1).
FILE_SUFFIXES = {"py", "json", "md", "log", "csv", "png", "pdf", "txt", "out", "err", "lock",
                 "toml", "sh", "xml", "mp4", "yaml", "yml", "cfg", "ini", "npz", "npy", "h5"}
# (file, span) -> why it may stay unresolved.
EXCEPTIONS: dict[tuple[str, str], str] = {}

_IDENT = r"[A-Za-z_]\w*"
_DOTTED = re.compile(rf"^({_IDENT}(?:\.{_IDENT})+)(?:\(.*\))?$")
_ROLE = re.compile(rf"^({_IDENT}(?:\.{_IDENT})*):({_IDENT})$")
_NODE_ID = re.compile(rf"^([\w./-]+\.py)::({_IDENT})(?:::({_IDENT}))?$")
_PRIVATE = re.compile(r"^(_[A-Za-z0-9]\w*)(?:\(.*\))?$")
_TEST = re.compile(r"^(test_\w+)$")
_PATH_WORD = re.compile(r"^[\w.<>{},*/-]+\.(?:py|json)$")
_STRIP = "\"'`[](),;:"
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
_HTML_ANCHOR = re.compile(r"<a\s[^>]*?\b(?:name|id)=\"([^\"]+)\"", re.I)
_WEB = re.compile(r"^(https?:|mailto:|ftp:)", re.I)


# ---------------------------------------------------------------------------------------------
# What the code defines (ast)
# ---------------------------------------------------------------------------------------------


def _targets(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.Assign):
        return node.targets
    if isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.NamedExpr)):
        return [node.target]
    if isinstance(node, (ast.For, ast.AsyncFor)):
        return [node.target]
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return [item.optional_vars for item in node.items if item.optional_vars]
    return []


def _flat(target: ast.AST) -> list[ast.AST]:
    if isinstance(target, (ast.Tuple, ast.List)):
        return [t for elt in target.elts for t in _flat(elt)]
    if isinstance(target, ast.Starred):
        return _flat(target.value)
    return [target]


def _block_defs(body: list[ast.stmt]) -> dict[str, ast.AST | None]:
    """Names a module or class body defines -> the ClassDef for classes, else None. Follows
    if/try/with blocks (not function bodies)."""
    names: dict[str, ast.AST | None] = {}
    for stmt in body:
        if isinstance(stmt, ast.ClassDef):
            names[stmt.name] = stmt
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names[stmt.name] = None
        else:
            for target in _targets(stmt):
                for t in _flat(target):
                    if isinstance(t, ast.Name):
                        names.setdefault(t.id, None)
            for sub in ("body", "orelse", "finalbody"):
                if isinstance(stmt, (ast.If, ast.Try, ast.With)) and getattr(stmt, sub, None):
                    names.update({k: v for k, v in _block_defs(getattr(stmt, sub)).items()
                                  if k not in names})
            for handler in getattr(stmt, "handlers", []):
                names.update({k: v for k, v in _block_defs(handler.body).items()
                              if k not in names})
    return names


def _self_attributes(cls: ast.ClassDef) -> set[str]:
    """Every `self.x` the class's methods assign (self: a method's first argument)."""
    found = set()
    for stmt in cls.body:
        if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) or not stmt.args.args:
            continue
        me = stmt.args.args[0].arg
        for node in ast.walk(stmt):
            for target in _targets(node):
                for t in _flat(target):
                    if (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                            and t.value.id == me):
                        found.add(t.attr)
    return found


def _base_names(cls: ast.ClassDef) -> list[str]:
    out = []
    for base in cls.bases:
        if isinstance(base, ast.Name):
            out.append(base.id)
        elif isinstance(base, ast.Attribute):
            out.append(base.attr)
    return out


@dataclass
class Project:
    """What the project's Python files define, read with ast."""

    root: Path
    modules: dict[str, Path] = field(default_factory=dict)  # dotted name -> file
    defs: dict[Path, dict[str, ast.AST | None]] = field(default_factory=dict)
    classes: dict[str, list[tuple[Path, ast.ClassDef]]] = field(default_factory=dict)
    anywhere: set[str] = field(default_factory=set)  # every name defined at any depth
    py_names: set[str] = field(default_factory=set)  # the file names of its Python files
    tests: set[str] = field(default_factory=set)  # the test functions of tests/test_*.py

    @classmethod
    def read(cls, root: Path) -> Project:
        p = cls(root)
        for py in sorted(root.glob("*.py")):
            p.modules[py.stem] = py
        for init in sorted(root.glob("*/__init__.py")):
            package = init.parent
            p.modules[package.name] = init
            for py in sorted(package.glob("*.py")):
                if py.name != "__init__.py":
                    p.modules[f"{package.name}.{py.stem}"] = py
        for folder in ("bench", "scripts"):
            for py in sorted((root / folder).glob("*.py")):
                p.modules[f"{folder}.{py.stem}"] = py
        for py in sorted((root / "tests").glob("*.py")):
            if not py.name.startswith("test_") and py.name != "conftest.py":
                p.modules.setdefault(py.stem, py)
        files = sorted(root.glob("*.py"))
        packages = [init.parent.name for init in sorted(root.glob("*/__init__.py"))]
        for folder in ("bench", "scripts", "tests", *packages):
            files += sorted((root / folder).rglob("*.py"))
        for py in files:
            tree = ast.parse(py.read_text(encoding="utf-8"), filename=str(py))
            p.defs[py] = _block_defs(tree.body)
            p.py_names.add(py.name)
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    p.classes.setdefault(node.name, []).append((py, node))
                    p.anywhere.add(node.name)
                    p.anywhere |= _self_attributes(node)
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    p.anywhere.add(node.name)
                    if py.parent.name == "tests" and py.name.startswith("test_"):
                        p.tests.add(node.name)
                for target in _targets(node):
                    for t in _flat(target):
                        if isinstance(t, ast.Name):
                            p.anywhere.add(t.id)
                        elif isinstance(t, ast.Attribute):
                            p.anywhere.add(t.attr)
        return p

    def members(self, name: str, seen: frozenset = frozenset()) -> dict[str, ast.AST | None]:
        """Everything the project classes called `name` and their project bases define."""
        out: dict[str, ast.AST | None] = {}
        for _, node in self.classes.get(name, []):
            out.update({k: v for k, v in _block_defs(node.body).items() if k not in out})
            for attr in _self_attributes(node):
                out.setdefault(attr, None)
            for base in _base_names(node):
                if base in self.classes and base not in seen | {name}:
                    for k, v in self.members(base, seen | {name}).items():
                        out.setdefault(k, v)
        return out

    def where(self, name: str) -> str:
        files = sorted({py.relative_to(self.root).as_posix() for py, _ in self.classes[name]})
        return ", ".join(files)


# ---------------------------------------------------------------------------------------------
# Resolving one span
# ---------------------------------------------------------------------------------------------


def _in_class(p: Project, cls: str, parts: list[str]) -> str | None:
    """None if parts[0] (then parts[1] ...) are members of project class `cls`, else why not."""
    members = p.members(cls)
    head, rest = parts[0], parts[1:]
    if head not in members:
        return f"class {cls} ({p.where(cls)}) defines no {head}"
    if not rest:
        return None
    node = members[head]
    if not isinstance(node, ast.ClassDef):
        return (f"{cls}.{head} is not a class, so its parts ({'.'.join(rest)}) cannot be "
                "checked; name it up to what the code defines")
    return _in_class(p, node.name, rest)


def _in_module(p: Project, module: str, parts: list[str]) -> str | None:
    """None if parts[0] is defined by `module` (then parts[1] ... members of that class), else
    why not."""
    path = p.modules[module]
    rel = path.relative_to(p.root).as_posix()
    if not parts:
        return None
    defs = p.defs[path]
    head, rest = parts[0], parts[1:]
    if head not in defs:
        return f"{rel} defines no {head}"
    if not rest:
        return None
    node = defs[head]
    if not isinstance(node, ast.ClassDef):
        return (f"{module}.{head} is not a class, so its parts ({'.'.join(rest)}) cannot be "
                "checked; name it up to what the code defines")
    return _in_class(p, node.name, rest)


def resolve_dotted(p: Project, name: str) -> tuple[str, str | None] | None:
    """(kind, None or why it does not resolve) for a dotted name rule 2 or 3 recognises; None
    for one they do not."""
    parts = name.split(".")
    if parts[-1] in FILE_SUFFIXES:
        return None
    if parts[0] in ("bench", "scripts") and parts[0] not in p.modules:
        module = ".".join(parts[:2])
        if module not in p.modules:
            return "module", f"there is no {parts[0]}/{parts[1]}.py"
        return "module", _in_module(p, module, parts[2:])
    for k in range(len(parts), 0, -1):
        module = ".".join(parts[:k])
        if module in p.modules:
            return "module", _in_module(p, module, parts[k:])
    if parts[0] in p.classes:
        return "class", _in_class(p, parts[0], parts[1:])
    return None


def check_span(p: Project, span: str) -> tuple[str, str | None] | None:
    """(kind, None or why not) for a span rules 1-4 and 6 recognise, None for one they do not
    (its path words are rule 5's, see path_words)."""
    span = span.strip().strip("\"'")
    if m := _NODE_ID.match(span):
        path, name, member = m.groups()
        file = p.root / path
        if not file.is_file():
            return "node id", f"there is no {path}"
        defs = p.defs.get(file) or _block_defs(ast.parse(file.read_text()).body)
        if name not in defs:
            return "node id", f"{path} defines no {name}"
        if member and member not in _block_defs(defs[name].body if defs[name] else []):
            return "node id", f"{path}'s {name} defines no {member}"
        return "node id", None
    if m := _ROLE.match(span):
        module, name = m.groups()
        if module in p.modules:
            return "role", _in_module(p, module, [name])
        return None
    if m := _DOTTED.match(span):
        return resolve_dotted(p, m.group(1))
    if m := _TEST.match(span):
        name = m.group(1)
        return "test", None if name in p.tests else (
            f"no file tests/test_*.py defines a function {name}")
    if (m := _PRIVATE.match(span)) and not span.startswith("__"):
        name = m.group(1)
        return "private", None if name in p.anywhere else (
            f"no def, class or assignment in the project's Python files is named {name}")
    return None


def path_words(text: str) -> list[str]:
    """The words of `text` that rule 5 checks: project-rooted paths and bare x.py names."""
    out = []
    for word in text.split():
        word = word.strip(_STRIP)
        if (not _PATH_WORD.match(word) or word.startswith(("/", "~", ".")) or ".." in word
                or word.count("<") != word.count(">")):
            continue
        if "/" in word:
            if word.split("/", 1)[0] in PROJECT_FOLDERS:
                out.append(word)
        elif word.endswith(".py"):
            out.append(word)
    return out


def _expand(word: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", word)
    if not m:
        return [word]
    return [e for alt in m.group(1).split(",")
            for e in _expand(word[:m.start()] + alt + word[m.end():])]


def check_path(p: Project, word: str) -> str | None:
    """None if every expansion of `word` matches a file, else why not."""
    for one in _expand(word):
        pattern = re.sub(r"<[^<>/]*>", "*", one)
        if "/" in pattern:
            if not glob.glob(glob.escape(str(p.root)) + "/" + pattern):
                return f"there is no {one}"
        elif not any(Path(name).match(pattern) for name in p.py_names):
            return f"no Python file of the project is named {one}"
    return None


# ---------------------------------------------------------------------------------------------
# Anchors
# ---------------------------------------------------------------------------------------------


def slug(title: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", title)
    text = re.sub(r"<[^>]*>", "", text)
    text = re.sub(r"[`*~]", "", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page: its headings' slugs (deduplicated) and HTML anchors."""
    lines = without_fences(text).split("\n")
    found: set[str] = set(_HTML_ANCHOR.findall(text))
    taken: dict[str, int] = {}
    for i, line in enumerate(lines):
        title = None
        if m := _ATX.match(line):
            title = m.group(2) or ""
        elif (i and _SETEXT.match(line) and lines[i - 1].strip()
              and not _ATX.match(lines[i - 1])
              and not re.match(r"^\s*([-*+>|]|\d+[.)])", lines[i - 1])):
            title = lines[i - 1]
        if title is None:
            continue
        base = result = slug(title)
        while result in taken:
            taken[base] += 1
            result = f"{base}-{taken[base]}"
        taken[result] = 0
        found.add(result)
    return found


def broken_anchors(files: list[Path], root: Path) -> tuple[int, list[str]]:
    """(number of anchors checked, one line per anchor that names no heading)."""
    cache: dict[Path, set[str]] = {}
    checked, broken = 0, []
    for md in files:
        for line, target in links(md.read_text(encoding="utf-8")):
            if _WEB.match(target) or "#" not in target:
                continue
            path, anchor = target.split("#", 1)
            page = (md.parent / path).resolve() if path else md
            if path and (page.suffix != ".md" or not page.is_file()):
                continue  # a non-Markdown target, or a missing page (test_links.py's)
            if page not in cache:
                cache[page] = anchors(page.read_text(encoding="utf-8"))
            checked += 1
            if unquote(anchor) not in cache[page]:
                broken.append(f"{md.relative_to(root)}:{line}: {target}: "
                              f"{page.relative_to(root)} has no heading with that anchor")
    return checked, broken


# ---------------------------------------------------------------------------------------------
# The whole documentation
# ---------------------------------------------------------------------------------------------


def unresolved_names(files: list[Path], p: Project, docs_root: Path | None = None,
                     exceptions: dict | None = None) -> tuple[Counter, list[str], set]:
    """(checked names by kind, one line per name that does not resolve, the exceptions used);
    files are named relative to `docs_root` (the project's root by default)."""
    docs_root = docs_root or p.root
    exceptions = EXCEPTIONS if exceptions is None else exceptions
    checked: Counter = Counter()
    broken, used = [], set()

    def report(md: Path, line: int, span: str, why: str | None) -> None:
        key = (md.relative_to(docs_root).as_posix(), span)
        if why is None:
            return
        if key in exceptions:
            used.add(key)
            return
        broken.append(f"{key[0]}:{line}: `{span}`: {why}")

    for md in files:
        text = md.read_text(encoding="utf-8")
        for line, span in code_spans(text):
            if found := check_span(p, span):
                checked[found[0]] += 1
                report(md, line, span, found[1])
            for word in path_words(span):
                checked["path"] += 1
                report(md, line, span, check_path(p, word))
        for start, block in fenced_blocks(text):
            for offset, block_line in enumerate(block.split("\n")[1:-1], start=1):
                for word in path_words(block_line):
                    checked["path"] += 1
                    report(md, start + offset, word, check_path(p, word))
    return checked, broken, used


@functools.cache
def project() -> Project:
    """The project's code, read once per test session."""
    return Project.read(ROOT)


def test_every_code_name_in_the_docs_resolves():
    p = project()
    checked, broken, used = unresolved_names(markdown_files(ROOT), p)
    assert not broken, ("Code names in the docs that the code does not define (see "
                        "tests/test_docs_names.py for the rules):\n" + "\n".join(broken))
    assert not set(EXCEPTIONS) - used, f"exceptions no longer needed: {set(EXCEPTIONS) - used}"
    # the walkers found what the docs hold, of every kind
    assert min(checked[k] for k in ("module", "class", "private", "test", "path")) > 0, checked


def test_every_anchor_in_the_docs_names_a_heading():
    checked, broken = broken_anchors(markdown_files(ROOT), ROOT)
    assert not broken, "Links to anchors that name no heading:\n" + "\n".join(broken)
    assert checked > 0


def test_the_checks_find_what_is_broken(tmp_path):
    """Made-up names and anchors fail; the recognised patterns, and only those, are checked."""
    p = project()
    for name, why in [
        ("valuerl.NoSuchThing", "valuerl.py defines no NoSuchThing"),
        ("ValueRL._no_such_method", "class ValueRL (valuerl.py) defines no _no_such_method"),
        ("valuerl.Td3", "valuerl.py defines no Td3"),  # imported there, defined elsewhere
        ("bench.no_such_bench", "there is no bench/no_such_bench.py"),
        ("valuerl_learner:NoSuchLearner", "valuerl_learner.py defines no NoSuchLearner"),
        ("tests/test_links.py::test_no_such_test", "tests/test_links.py defines no "
                                                   "test_no_such_test"),
        ("_no_such_private_name", "no def, class or assignment in the project's Python files is "
                                  "named _no_such_private_name"),
        ("test_no_such_test", "no file tests/test_*.py defines a function test_no_such_test"),
        ("valuerl.continuation.dones", "valuerl.continuation is not a class, so its parts "
                                       "(dones) cannot be checked; name it up to what the code "
                                       "defines"),
    ]:
        assert check_span(p, name)[1] == why, name
    for name in ["valuerl.ValueRL", "valuerl.ValueRL.rollout", "ValueRL.rollout",
                 "ValueRL.__init__", "learning.settings.Td3.tau", "Td3.policy_delay",
                 "ValueRL.settings", "nn.EnsembleFeedForward(...)", "learning.oracle",
                 "learning.oracle.MujocoOracle", "bench.sample_efficiency.PRESETS",
                 "valuerl_learner:ValueRLLearner", "pipeline_stubs:StubLearner",
                 "tests/test_links.py::test_every_markdown_link_exists", "_normalise_rows",
                 "test_pure_targets_match_numpy", "ValueRLLearner.save"]:  # Learner's
        assert check_span(p, name) is not None and check_span(p, name)[1] is None, name
    for not_code in ["policy_config.value_expansion", "td3.tau", "hps.json", "valuerl.log",
                     "config.py", "charts/mean_q", "python master.py CONFIG 0", "--seed 7",
                     "0.25", "tf.function", "Checkpoint.read", "rollout", "__init__",
                     "mujoco.rollout", "\"module:name\""]:
        assert check_span(p, not_code) is None, not_code
    assert path_words("python bench/posture.py RUN log/hps.json /work/x.py hps.json "
                      "[config/a.json, tests/configs/tiny_{ddpg,steve}.json]") == [
        "bench/posture.py", "config/a.json", "tests/configs/tiny_{ddpg,steve}.json"]
    assert check_path(p, "tests/configs/tiny_{ddpg,steve}.json") is None
    assert check_path(p, "config/experiments/benchmark/cpu/<env>/ddpg.json") is None
    assert check_path(p, "test_<module>.py") is None
    assert check_path(p, "tests/configs/tiny_{ddpg,nothing}.json") == (
        "there is no tests/configs/tiny_nothing.json")
    assert check_path(p, "no_such_file.py") == "no Python file of the project is named "\
                                               "no_such_file.py"

    # the walk over files: spans, fenced blocks, exceptions
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(
        "`valuerl.NoSuchThing` and `ValueRL._no_such_method`, `valuerl.ValueRL`\n"
        "```\npython master.py config/no_such.json 0\n```\n`old.Name` `charts/mean_q`\n")
    doc = tmp_path / "docs" / "page.md"
    doc.write_text("`valuerl.BACKBONES` (kept)\n")
    kept = (doc.relative_to(tmp_path).as_posix(), "valuerl.BACKBONES")
    checked, broken, used = unresolved_names(
        markdown_files(tmp_path), p, tmp_path,  # the project's code, tmp_path's docs
        exceptions={kept: "a historical record"})
    assert broken == ["README.md:1: `valuerl.NoSuchThing`: valuerl.py defines no NoSuchThing",
                      "README.md:1: `ValueRL._no_such_method`: class ValueRL (valuerl.py) "
                      "defines no _no_such_method",
                      "README.md:3: `config/no_such.json`: there is no config/no_such.json"]
    assert used == {kept}

    # anchors: GitHub's slugs, duplicates, same-page links, code left out
    (tmp_path / "docs/algorithm.md").write_text((ROOT / "docs/algorithm.md").read_text())
    other = tmp_path / "docs" / "other.md"
    other.write_text(
        "# Learning curves (`plot.py`)\n## A, b & c: d_e\n## Twice\n## Twice\n"
        "```\n# not a heading\n```\nSetext heading\n---\n<a name=\"kept\"></a>\n"
        "[a](#learning-curves-plotpy) [b](#a-b--c-d_e) [c](#twice-1) [d](#twice-2)\n"
        "[e](#not-a-heading) [f](#setext-heading) [g](#kept) `[h](#in-code)`\n"
        "[i](algorithm.md#no-such-heading) [j](algorithm.md#3-value-targets-policy-learner)\n"
        "[k](algorithm.md#3-value-targets) [l](../README.md#nothing)\n")
    checked, broken = broken_anchors(markdown_files(tmp_path), tmp_path)
    assert checked == 11
    page = other.relative_to(tmp_path).as_posix()
    assert [b.split(": ")[0] for b in broken] == [f"{page}:{n}" for n in (11, 12, 13, 14, 14)]
    assert [b.split(": ")[1] for b in broken] == [
        "#twice-2", "#not-a-heading", "algorithm.md#no-such-heading", "../README.md#nothing",
        "algorithm.md#3-value-targets"]

