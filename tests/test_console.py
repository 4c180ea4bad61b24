"""bot/console.py: the Slack workflow in a terminal, on the real engine."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.console import Console
from engine import Engine, Settings

ROOT = Path(__file__).resolve().parent.parent


def _dataset(tmp_path: Path, n: int = 40) -> Path:
    lines = (ROOT / "examples" / "prices.jsonl").read_text().splitlines(keepends=True)
    path = tmp_path / "prices.jsonl"
    path.write_text("".join(lines[:n]))
    return path


def _console(engine: Engine, *, interactive: bool = False) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(engine, out=out, interactive=interactive), out


def test_upload_help_jobs_and_errors(settings: Settings, tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [}\n')
    with Engine(settings) as engine:
        console, out = _console(engine)
        code = console.run(
            [
                "/help",
                f"/upload {data}",
                f"/upload {bad}",
                "/upload /nonexistent.jsonl",
                "/jobs",
                "/finetune wings=2",
                "/finetune a b",
                "/cancel ft-00000000",
                "/frobnicate",
                "/quit",
                "/jobs",
            ]
        )
        text = out.getvalue()
    assert code == 0
    assert "/upload PATH" in text
    assert "Ready: prices.jsonl" in text and "Examples: 40" in text and "→ start it with: /finetune" in text
    assert "Not usable: bad.jsonl" in text and "line 1" in text
    assert "There is no file at /nonexistent.jsonl" in text
    assert "No fine-tune jobs" in text
    assert "wings" in text and "Accepted keys" in text  # the engine's ConfigError, shown plainly
    assert "second dataset" in text
    assert "ft-00000000" in text  # not found, said plainly
    assert "Unknown command '/frobnicate'" in text
    assert "Traceback" not in text and "*" not in text
    assert text.count("No fine-tune jobs") == 1  # nothing runs after /quit


@pytest.mark.slow
def test_a_whole_fine_tune_and_an_answer_in_the_console(settings: Settings, tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    with Engine(settings) as engine:
        console, out = _console(engine, interactive=True)
        console.run(
            [f"/upload {data}", "/finetune epochs=2", "/jobs", "/ask New Valuline trail running shoes."]
        )
        text = out.getvalue()
    assert "Fine-tune ft-" in text and "queued" in text
    assert "\r" in text and "step" in text and "▓" in text  # the live progress bar
    for expected in (
        "Pre-flight",
        "Baseline (before fine-tuning)",
        "Evaluation",
        "base few-shot",
        "fine-tuned",
    ):
        assert expected in text, expected
    assert "finished" in text and "succeeded" in text
    assert "Answered by" in text and "tiny demo model" in text
    assert "Traceback" not in text


def test_ftbot_chat_and_serve_without_tokens_start_the_console(settings: Settings) -> None:
    from bot.cli import main

    env = {
        "FTBOT_HOME": str(settings.home),
        "SLACK_BOT_TOKEN": "",
        "SLACK_APP_TOKEN": "",
        "SLACK_SIGNING_SECRET": "",
    }
    result = CliRunner().invoke(main, ["chat"], input="/help\n/quit\n", env=env)
    assert result.exit_code == 0, result.output
    assert "ftbot console" in result.output and "/upload PATH" in result.output
    result = CliRunner().invoke(main, ["serve"], input="/quit\n", env=env)
    assert result.exit_code == 0, result.output
    assert "local console" in result.output


def test_serve_with_a_malformed_token_says_which(settings: Settings) -> None:
    from bot.cli import main

    env = {"FTBOT_HOME": str(settings.home), "SLACK_BOT_TOKEN": "xapp-1-oops-123456", "SLACK_APP_TOKEN": ""}
    result = CliRunner().invoke(main, ["serve"], env=env)
    assert result.exit_code == 1
    assert "SLACK_BOT_TOKEN holds an app-level token" in result.output and "xapp-1-oops" not in result.output
    assert "Traceback" not in result.output
    env = {"FTBOT_HOME": str(settings.home), "SLACK_BOT_TOKEN": "xoxb-1-2-abcdef", "SLACK_SIGNING_SECRET": ""}
    result = CliRunner().invoke(main, ["serve", "--http"], env=env)
    assert result.exit_code == 1 and "SLACK_SIGNING_SECRET" in result.output


@pytest.mark.slow
def test_make_runs_console_shows_the_job_without_log_lines(settings: Settings, tmp_path: Path) -> None:
    """``make run`` is ``ftbot serve`` with no Slack tokens: a console for a person. The scheduler
    that runs its jobs ticks twice a second; none of that (nor any log line) reaches the screen."""
    import os
    import subprocess
    import sys

    data = _dataset(tmp_path, n=24)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SLACK_")},
        "FTBOT_HOME": str(settings.home),
        "FTBOT_BASE_MODEL": "builtin:tiny",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot", "serve"],
        input=f"/upload {data}\n/finetune epochs=1\n",  # the end of input waits for the job
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-2000:]
    assert "local console" in text and "finished" in text
    assert "apscheduler" not in text and " INFO " not in text, text[:2000]
