"""bot/console.py: an unknown command says which command was meant (issue 12), on the real engine."""

from __future__ import annotations

import io

from bot.console import Console
from engine import Engine, Settings


def test_an_unknown_command_gets_did_you_mean(settings: Settings) -> None:
    out = io.StringIO()
    with Engine(settings) as engine:
        code = Console(engine, out=out, interactive=False).run(
            ["/uplaod examples/labels.jsonl", "upload x.jsonl", "/stauts", "/status", "/frobnicate", "/quit"]
        )
    text = out.getvalue()
    assert code == 0
    assert "Unknown command '/uplaod'. Did you mean /upload?" in text
    assert "Unknown command 'upload'. Did you mean /upload?" in text
    assert "Unknown command '/stauts'. Did you mean /finetune status?" in text
    assert "Unknown command '/status'. Did you mean /finetune status?" in text
    assert "Unknown command '/frobnicate'. Commands:" in text  # nothing close: no guess
    assert "Traceback" not in text
