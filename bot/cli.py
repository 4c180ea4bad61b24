"""The ``ftbot`` command group. Each area's commands live in ``bot/commands/``; this module only
assembles them, so ``ftbot --help`` stays instant (heavy imports happen inside commands)."""

from __future__ import annotations

import importlib
import logging
import warnings

import click

# (module, command names): each area's commands.
_COMMAND_MODULES: list[tuple[str, tuple[str, ...]]] = [
    ("bot.commands.validate", ("validate",)),
    ("bot.commands.jobs", ("run", "jobs")),
    ("bot.commands.models", ("ask", "models")),
    ("bot.commands.serve", ("serve", "chat")),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ftbot")
def main() -> None:
    """ftbot: fine-tune an LLM on your team's examples, and find out honestly whether it helped.

    Start with `ftbot validate FILE`, then `ftbot run FILE`, then `ftbot ask "..."`.
    """
    # bitsandbytes' CPU backend logs a warning on import when the optional `kernels` package is
    # missing ("Failed to load CPU gemm_4bit_forward from kernels-community"); 4-bit works without
    # it, so it is noise on every CPU `ftbot ask` / `ftbot run`. Real errors still show.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # Library deprecation notices (transformers 5 renames) are for us, not for the person at the
    # terminal; tests still see them.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.|peft\.|trl\.")


for _module_name, _names in _COMMAND_MODULES:
    _module = importlib.import_module(_module_name)
    for _name in _names:
        main.add_command(getattr(_module, _name))
