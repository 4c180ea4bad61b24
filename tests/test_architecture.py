"""ARCHITECTURE.md's import rules, read from the source with ``ast``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY_ML = {
    "torch",
    "transformers",
    "peft",
    "trl",
    "bitsandbytes",
    "datasets",
    "accelerate",
    "tokenizers",
    "safetensors",
}
# library -> the only modules that may import it
OWNERS: dict[str, set[str]] = {
    "openai": {
        "engine.backends.openai_chat",
        "engine.backends.openai_client",
        "engine.backends.openai_errors",
        "engine.backends.openai_jobs",
    },
    "sqlite_utils": {"engine.store.db", "engine.store.migrations"},
    "apscheduler": {"engine.scheduler"},
    "matplotlib": {"engine.charts"},
    "ray": {"engine.cluster"},
}
ML_OWNERS_PREFIX = ("engine.backends.local_",)
ML_OWNERS: set[str] = set()  # modules outside engine/backends/local_* allowed ML imports
PURE_CORE = {
    "engine.dataset",
    "engine.jobs",
    "engine.evaluate",
    "engine.progress",
    "engine.errors",
    "engine.config",
    "engine.prompts",
    "engine.recipe",
    "engine.dataset.check_example",
    "engine.dataset.checks",
    "engine.dataset.examples",
    "engine.dataset.lines",
    "engine.dataset.mistakes",
    "engine.dataset.report",
    "engine.dataset.rules",
    "engine.dataset.syntax",
    "engine.dataset.validate",
    "engine.evaluate.answers",
    "engine.evaluate.flags",
    "engine.evaluate.formatting",
    "engine.evaluate.guess",
    "engine.evaluate.names",
    "engine.evaluate.render",
    "engine.evaluate.report",
    "engine.evaluate.scoring",
    "engine.evaluate.verdict",
    "engine.messages",
}
# What a pure core may import of the engine: the other pure cores (but the recipe) and the settings.
PURE_IMPORTS = (PURE_CORE - {"engine.recipe"}) | {"engine.settings"}
SETTINGS_MODULES = {"engine.settings", "bot.settings"}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for package in ("engine", "bot"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out.append((".".join(parts), path))
    return out


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module top level?) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    # imports nested in `if TYPE_CHECKING:` or try/except at top level count as top level
    for node in tree.body:
        if isinstance(node, ast.If | ast.Try):
            top_level.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno, id(node) in top_level) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno, id(node) in top_level))
    return found


MODULES = _modules()


def test_the_packages_have_modules() -> None:
    names = {name for name, _ in MODULES}
    assert {
        "engine",
        "engine.errors",
        "engine.jobs",
        "engine.progress",
        "engine.settings",
        "bot.cli",
    } <= names


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_import_rules(module: str, path: Path) -> None:
    problems = []
    for imported, line, top in _imports(path):
        root = imported.split(".")[0]
        where = f"{path.relative_to(ROOT)}:{line} imports {imported}"
        if module.startswith("engine") and root in {"bot", "slack_bolt", "slack_sdk"}:
            problems.append(f"{where}: engine must never import bot or Slack")
        if module.startswith("bot") and root == "engine" and imported != "engine":
            problems.append(
                f"{where}: bot imports engine only through its public API (`from engine import ...`)"
            )
        if root in HEAVY_ML:
            allowed = module in ML_OWNERS or module.startswith(ML_OWNERS_PREFIX)
            if not allowed:
                problems.append(f"{where}: ML libraries live only in engine/backends/local_*")
            elif top:
                problems.append(
                    f"{where}: import ML libraries inside functions so `import engine` stays light"
                )
        if root in OWNERS and module not in OWNERS[root]:
            problems.append(f"{where}: only {sorted(OWNERS[root])} may import {root}")
        if root in ("matplotlib", "ray") and top:
            problems.append(f"{where}: import {root} inside functions")
        if module in PURE_CORE and root not in sys.stdlib_module_names and root != "engine":
            problems.append(f"{where}: {module} is a pure core (stdlib and engine only)")
        if module in PURE_CORE and root == "engine" and imported not in PURE_IMPORTS:
            problems.append(f"{where}: a pure core may import only other pure engine modules")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_environment_is_read_only_in_settings(module: str, path: Path) -> None:
    if module in SETTINGS_MODULES:
        return
    tree = ast.parse(path.read_text())
    offenders = []
    for node in ast.walk(tree):
        reads_os_attr = (
            isinstance(node, ast.Attribute)
            and node.attr in {"environ", "getenv", "environb"}
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        )
        imports_environ = (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and any(a.name in {"environ", "getenv"} for a in node.names)
        )
        if reads_os_attr or imports_environ:
            offenders.append(node.lineno)
    assert not offenders, f"{path.relative_to(ROOT)} reads the environment at lines {offenders}; use settings"


def test_importing_engine_and_the_slack_app_does_not_load_torch() -> None:
    code = (
        "import sys, importlib, engine\n"
        "for name in ('bot.slack.app', 'bot.cli', 'bot.console'):\n"
        "    importlib.import_module(name)\n"
        "[getattr(engine, n) for n in engine.__all__]\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'trl') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_engine_all_lists_its_public_names() -> None:
    import engine

    assert engine.__all__ == sorted(engine.__all__)
    for name in engine.__all__:
        assert getattr(engine, name) is not None


# --- issue 13: no import cycle, bounded sizes, project imports at the top -------------------------

MAX_MODULE_LINES = 900
MAX_FUNCTION_LINES = 120
MODULE_NAMES = {name for name, _ in MODULES}


def _project_targets(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The project modules an import statement loads (``from engine import x`` loads ``engine.x``
    when x is a module, else ``engine``)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif node.level == 0 and node.module:
        names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    else:
        names = []
    return [n for n in names if n in MODULE_NAMES]


def _import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports, at any depth (module level or inside functions)."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES:
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[module] = {
            target
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for target in _project_targets(node)
            if target != module and not module.startswith(target + ".")
        }
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_at_any_depth() -> None:
    """A package importing its own submodules (``engine`` -> ``engine.x``) is not a cycle; any other
    loop, through module-level or function-level imports, is."""
    assert _cycles(_import_graph()) == []


def test_the_local_model_layer_imports_no_other_backend() -> None:
    path = ROOT / "engine" / "backends" / "local_model.py"
    others = [
        f"line {line}: {name}"
        for name, line, _ in _imports(path)
        if name.startswith("engine.backends.") and name != "engine.backends.local_builtin"
    ]
    assert not others, f"local_model.py is the bottom layer: {others}"


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_modules_and_functions_stay_small(module: str, path: Path) -> None:
    text = path.read_text()
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES, (
        f"{path.relative_to(ROOT)} has {lines} lines (at most {MAX_MODULE_LINES})"
    )
    long = [
        f"{node.name} (line {node.lineno}, {node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (node.end_lineno or node.lineno) - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.relative_to(ROOT)}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def _reason_above(source: list[str], line: int) -> bool:
    """Whether the import on ``line`` (1-based), or a comment in the block of imports and comments
    right above it, says why it is not at the top."""
    index = line - 1
    if "#" in source[index]:
        return True
    index -= 1
    while index >= 0 and source[index].strip().startswith(("from ", "import ", "#")):
        if "#" in source[index]:
            return True
        index -= 1
    return False


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_project_imports_inside_functions_say_why(module: str, path: Path) -> None:
    """The project's own modules are imported at the top; one imported inside a function carries its
    reason in a comment on that line or the line above (e.g. keeping torch out of ``import engine``)."""
    source = path.read_text().splitlines()
    unexplained = []
    for imported, line, top in _imports(path):
        if top or imported.split(".")[0] not in {"engine", "bot"}:
            continue
        if not _reason_above(source, line):
            unexplained.append(f"line {line}: {imported}")
    assert not unexplained, (
        f"{path.relative_to(ROOT)} imports inside functions without a reason: {unexplained}"
    )
