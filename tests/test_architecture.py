"""Static checks that keep the package's design true: the layer contracts of import-linter
hold, no module is over ``MAX_LINES`` lines, no module uses another module's underscore
names, and comments and docstrings say why in present terms rather than citing the
experiments that led there. Each failure names the modules and lines to fix."""

from __future__ import annotations

import ast
import io
import itertools
import re
import subprocess
import sys
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "memory"
MAX_LINES = 450


def modules(under: Path = PACKAGE) -> Iterator[Path]:
    yield from sorted(under.rglob("*.py"))


def dotted(path: Path) -> str:
    """``memory/log/sql.py`` -> ``memory.log.sql``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {dotted(p): p for p in modules()}


def is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute name an ``ImportFrom`` imports from."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package(module) else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def own(name: str) -> bool:
    return name == "memory" or name.startswith("memory.")


def private_uses(path: Path) -> Iterator[str]:
    return uses_in(path.read_text(), dotted(path), str(path.relative_to(ROOT)))


def uses_in(source: str, module: str, where: str) -> Iterator[str]:
    """``from m import _name`` and ``m._name`` where ``m`` is another module of the package
    or a class imported from one; ``self``/``cls`` and dunder names are not looked at."""
    tree = ast.parse(source, where)
    bound: dict[str, str] = {}  # local name -> module or class of the package it names
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if own(alias.name):
                    local = alias.asname or alias.name.split(".")[0]
                    bound[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom):
            source = resolve(module, node)
            if not own(source):
                continue
            for alias in node.names:
                if private(alias.name):
                    yield f"{where}:{node.lineno}: from {source} import {alias.name}"
                bound[alias.asname or alias.name] = f"{source}.{alias.name}"
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and private(node.attr)):
            continue
        chain = []
        value: ast.expr = node.value
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if not isinstance(value, ast.Name) or value.id in ("self", "cls"):
            continue
        target = bound.get(value.id)
        if target is None or target == module:
            continue
        name = ".".join([target, *reversed(chain)])
        yield f"{where}:{node.lineno}: {ast.unparse(node)} ({name}.{node.attr})"


HISTORY = [
    # numbered periods of work on the code, not the log's sessions or a score's rounding
    r"\(session [0-9]+",
    r"\b(?:since|as of|until|before|after) session [0-9]+",
    r"\bsession [0-9]+ (?:found|measured|showed|tried|added|made|fixed|moved|changed)\b",
    r"\bround ?[0-9]+",
    r"--round",
    r"\blab round",
    r"\bissue #?[0-9]+",
    r"\bexperiment [0-9]+",
    r"\bphase [0-9]+",
]
HISTORY_RE = re.compile("|".join(HISTORY), re.IGNORECASE)


def prose(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every comment and docstring of a module."""
    source = path.read_text()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                             ast.AsyncFunctionDef)):
            first = node.body
            if first and isinstance(first[0], ast.Expr) \
                    and isinstance(first[0].value, ast.Constant) \
                    and isinstance(first[0].value.value, str):
                yield first[0].lineno, first[0].value.value
        # attribute docstrings: a string right after an assignment
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for prev, nxt in itertools.pairwise(body):
            if isinstance(prev, (ast.Assign, ast.AnnAssign)) and isinstance(nxt, ast.Expr) \
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                yield nxt.lineno, nxt.value.value


def test_no_module_is_over_the_line_limit() -> None:
    long = {str(p.relative_to(ROOT)): n for p in modules()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules (over {MAX_LINES} lines): {long}"


def test_no_module_uses_another_modules_underscore_names() -> None:
    uses = [use for p in modules() for use in private_uses(p)]
    assert uses == [], "give these a public name or a small public method:\n" + \
        "\n".join(uses)


def test_the_underscore_check_sees_what_it_should() -> None:
    """The check above on a module written to break it, so its silence means something."""
    probe = ("from memory.log import sql\nfrom memory.log.sql import _X\n"
             "from ..log import sealing as crypto\nfrom memory.log import Log\n"
             "import memory.pg.engine as eng\n\n"
             "def f(self):\n    return (sql._COLUMNS, crypto._LOCK, Log._pages,\n"
             "            eng._x, self._ok, sql.__name__)\n")
    found = list(uses_in(probe, "memory.retrieval.probe", "probe"))
    assert [use.split(": ", 1)[1] for use in found] == [
        "from memory.log.sql import _X",
        "sql._COLUMNS (memory.log.sql._COLUMNS)",
        "crypto._LOCK (memory.log.sealing._LOCK)",
        "Log._pages (memory.log.Log._pages)",
        "eng._x (memory.pg.engine._x)",
    ]


def test_no_experiment_history_in_comments_or_docstrings() -> None:
    """Docstrings and comments state what the code does and why, in present terms; the
    path of experiments that led there lives in git history."""
    hits = [f"{p.relative_to(ROOT)}:{line}: {m.group(0)!r}"
            for folder in (PACKAGE, ROOT / "tests") for p in modules(folder)
            if p.name != Path(__file__).name
            for line, text in prose(p) for m in HISTORY_RE.finditer(text)]
    assert hits == [], "reword these in present terms:\n" + "\n".join(hits)


def test_the_history_check_sees_what_it_should() -> None:
    for text in ("tuned (session 14)", "since session 9", "session 3 measured",
                 "measured in round3", "run with --round 2", "the lab round found",
                 "see issue 15"):
        assert HISTORY_RE.search(text), text
    for text in ("the session's version", "the term is only in session 1",
                 "rounds a score", "a tissue of lies"):
        assert not HISTORY_RE.search(text), text


def test_the_import_contracts_hold() -> None:
    """import-linter's layers (cli -> store, forget, erasure -> retrieval -> projections ->
    log -> pg) and no cycles between sibling modules (pyproject.toml)."""
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "BROKEN" not in run.stdout
