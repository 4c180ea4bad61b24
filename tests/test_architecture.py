"""DESIGN.md's import rules, read from the source with ``ast``."""

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
        if root == "matplotlib" and top:
            problems.append(f"{where}: import matplotlib inside functions")
        if module in PURE_CORE and root not in sys.stdlib_module_names and root != "engine":
            problems.append(f"{where}: {module} is a pure core (stdlib and engine only)")
        if (
            module in PURE_CORE
            and root == "engine"
            and imported
            not in {
                "engine.errors",
                "engine.progress",
                "engine.jobs",
                "engine.settings",
                "engine.dataset",
                "engine.evaluate",
                "engine.config",
                "engine.prompts",
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
        ):
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
