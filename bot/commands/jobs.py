"""``ftbot run`` (the whole pipeline, headless) and ``ftbot jobs`` (list jobs).

``run`` validates and stores the file, submits a job, runs it in a worker process in the
foreground, shows progress on stderr, and ends with the result: a readable summary, or with
``--json`` one JSON object on stdout (the README's contract). Exit code 0 when the job succeeded
(whatever the verdict), 1 otherwise (bad options, unusable data, failure, cancel with Ctrl-C).
A local job waits in the queue while another local job holds the host (engine.hostlock.HostLock:
one at a time across ``ftbot run``, ``serve`` and ``chat``); the waiting line says which one.

Jobs started here belong to the local workspace (``LOCAL_TEAM`` / ``LOCAL_CHANNEL``), which is
also where the ``ftbot chat`` console works and where ``ftbot ask`` and ``ftbot models`` look.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import IO, Any

import click

from bot.commands.common import LOCAL_CHANNEL, LOCAL_TEAM, fail, local_engine
from bot.progress_view import terminal_lines, terminal_step
from engine import JobState, ProgressEvent, job_summary


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "cli"


class TerminalProgress:
    """A progress sink for a terminal: milestones as lines, training steps as one live line
    (rewritten in place on a terminal, a line every 10% otherwise)."""

    def __init__(self, stream: IO[str] | None = None, *, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._line_open = False
        self._last_decile = -1

    def _write_line(self, text: str) -> None:
        if self._line_open:
            self.stream.write("\n")
            self._line_open = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def emit(self, event: ProgressEvent) -> None:
        """Show ``event``: its lines (bot/progress_view.py), or a training step on the live line."""
        if event.kind == "step":
            self._step(event)
            return
        if event.kind == "state":
            self._last_decile = -1
        for line in terminal_lines(event):
            self._write_line(line)

    def _step(self, event: ProgressEvent) -> None:
        text, fraction = terminal_step(event)
        if self.live:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
            self._line_open = True
        else:
            decile = int(fraction * 10)
            if decile != self._last_decile:
                self._last_decile = decile
                self._write_line(text)


def _report_errors(report: Any, name: str) -> str:
    errors = list((report or {}).get("errors") or [])
    lines = [f"{name} is not usable ({len(errors)} error(s)):"]
    for err in errors[:10]:
        where = f"line {err.get('line')}: " if err.get("line") else ""
        lines.append(f"  - {where}{err.get('message')}")
    if len(errors) > 10:
        lines.append(f"  ... and {len(errors) - 10} more (see `ftbot validate {name}`).")
    return "\n".join(lines)


# Supporting metrics worth a column, most telling first (the primary metric always comes first).
_TABLE_ORDER = (
    "parse_rate",
    "valid_rate",
    "median_ae",
    "p90_ae",
    "max_ae",
    "within_10pct",
    "mae",
    "field_accuracy",
    "exact_match",
    "accuracy",
    "macro_f1",
    "token_f1",
    "rouge_l",
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _print_summary(summary: dict[str, Any]) -> None:
    click.echo(f"Job {summary['job_id']}: {summary['status']}")
    if summary.get("error"):
        click.echo(f"  {summary['error']}")
    if summary.get("task"):
        metric = summary["metric"]
        click.echo(f"  task {summary['task']}, primary metric {metric}")
        rows = [
            ("zero-shot", summary["baseline"]["zero_shot"]),
            ("few-shot", summary["baseline"]["few_shot"]),
            ("fine-tuned", summary["finetuned"]),
        ]
        present = {k for _, m in rows for k, v in m.items() if isinstance(v, int | float) and k != "n"}
        names = [metric, *[k for k in _TABLE_ORDER if k in present and k != metric]][:6]
        click.echo("  " + "model".ljust(12) + "".join(n[:14].rjust(15) for n in names))
        for label, values in rows:
            click.echo("  " + label.ljust(12) + "".join(_fmt(values.get(n)).rjust(15) for n in names))
    if summary.get("verdict"):
        click.echo(f"  verdict: {summary['verdict']}")
    if summary.get("summary"):
        click.echo(f"  {summary['summary']}")
    if summary.get("model_id"):
        if summary.get("promoted"):
            promoted = "the default model here"
        elif summary.get("verdict") == "worse":
            promoted = "not made the default (worse)"
        elif summary.get("verdict"):  # a user's choice stands; the promotion message said so
            promoted = "not made the default: a user chose another; `ftbot models --use ID` switches"
        else:
            promoted = "not made the default"
        click.echo(f"  model: {summary['model_id']} ({promoted})")
    if summary.get("predictions"):
        click.echo(f"  predictions: {summary['predictions']}")


@click.command("run")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--eval-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Evaluate on this file instead of a held-out split of FILE.",
)
@click.option("--backend", default=None, help="local (QLoRA here) or openai.")
@click.option(
    "--base-model",
    default=None,
    help="Base model: a Hugging Face id, a local directory, builtin:smollm2 (the default) or builtin:tiny.",
)
@click.option("--epochs", default=None, help="Training epochs.")
@click.option("--lr", default=None, help="Learning rate.")
@click.option("--lora-r", default=None, help="LoRA rank r.")
@click.option(
    "--option",
    "-o",
    "extra",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any other training option (as in /finetune), e.g. -o batch=2 -o max_length=512.",
)
@click.option("--yes", is_flag=True, help="Accept a cost confirmation (OpenAI) without asking.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the result at the end.")
def run(
    file: Path,
    eval_file: Path | None,
    backend: str | None,
    base_model: str | None,
    epochs: str | None,
    lr: str | None,
    lora_r: str | None,
    extra: tuple[str, ...],
    yes: bool,
    as_json: bool,
) -> None:
    """Validate FILE, measure the baseline, fine-tune, evaluate: the whole pipeline, headless.

    Progress goes to stderr; the result to stdout. Exit code 0 when the job succeeded (whatever
    the verdict), 1 otherwise. One local job trains on a host at a time: while another one runs
    (another ftbot run, the bot or the console on the same FTBOT_HOME), this one waits in the
    queue, says which job it waits for, and starts when that one ends.

    Example:

        ftbot run examples/prices.jsonl --epochs 2 --json
    """
    options: dict[str, str] = {}
    for key, value in (
        ("backend", backend),
        ("base_model", base_model),
        ("epochs", epochs),
        ("lr", lr),
        ("r", lora_r),
    ):
        if value is not None:
            options[key] = value
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--option expects KEY=VALUE, got {item!r}.", as_json=as_json)
        options[key.strip()] = value.strip()
    for path, what in ((file, "FILE"), (eval_file, "--eval-file")):
        if path is not None and not path.is_file():
            fail(f"{what}: {path} does not exist or is not a file.", as_json=as_json)
    user = _user()
    progress = TerminalProgress()
    with local_engine(as_json=as_json) as engine:

        def add_dataset(path: Path) -> str:
            """Store and validate ``path``; end the command when it is not usable."""
            record = engine.add_dataset(
                path,
                uploaded_by=user,
                team=LOCAL_TEAM,
                channel=LOCAL_CHANNEL,
                base_model=options.get("base_model"),
            )
            if not record.usable:
                fail(_report_errors(record.report, str(path)), as_json=as_json, status="invalid")
            return record.hash

        dataset_hash = add_dataset(file)
        eval_hash = add_dataset(eval_file) if eval_file is not None else None
        job = engine.submit(
            dataset_hash,
            options=options,
            owner=user,
            team=LOCAL_TEAM,
            channel=LOCAL_CHANNEL,
            eval_dataset_hash=eval_hash,
            confirmed=yes,
            is_admin=True,  # the local operator: any base model, no limit on unfinished jobs
        )
        click.echo(f"Job {job.id} ({job.backend} backend).", err=True)
        job = engine.run_job(job.id, progress)
        if not job.is_final and job.result.get("awaiting_confirmation"):
            if yes:
                engine.confirm(job.id, user=user)
                job = engine.run_job(job.id, progress)
            else:
                click.echo(
                    "This job needs a cost confirmation: run again with --yes to accept the "
                    "estimate above. Nothing was started.",
                    err=True,
                )
                job = engine.cancel(job.id, user=user)
        summary = job_summary(job)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        _print_summary(summary)
    sys.exit(0 if summary["status"] == JobState.SUCCEEDED.value else 1)


@click.command("jobs")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as a JSON list.")
@click.option("--limit", default=50, show_default=True, help="How many jobs, newest first.")
def jobs(as_json: bool, limit: int) -> None:
    """List fine-tuning jobs, newest first.

    Example:

        ftbot jobs --json
    """
    with local_engine(as_json=as_json) as engine:
        rows = []
        for job in engine.jobs(limit=limit):
            row = job_summary(job)
            row.update(
                created_at=job.created_at.isoformat(),
                finished_at=job.finished_at.isoformat() if job.finished_at else None,
                dataset=job.dataset_hash,
                dataset_name=job.result.get("dataset_name"),
                owner=job.owner,
                queue_position=engine.queue_position(job.id) if job.state is JobState.QUEUED else None,
            )
            rows.append(row)
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("No jobs yet. Start one with `ftbot run FILE`.")
        return
    click.echo(f"{'job':<12} {'state':<11} {'backend':<8} {'created':<17} {'verdict':<26} dataset")
    for row in rows:
        state = row["status"] + (f" #{row['queue_position']}" if row["queue_position"] else "")
        verdict = row["verdict"] or (row["error"] or "")[:26]
        created = row["created_at"][:16].replace("T", " ")
        click.echo(
            f"{row['job_id']:<12} {state:<11} {row['backend']:<8} {created:<17} {verdict:<26} "
            f"{row['dataset_name'] or row['dataset'][:12]}"
        )
