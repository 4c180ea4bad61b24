"""``ftbot chat``: the Slack workflow in a terminal, on the same engine, with no Slack.

Commands: ``/upload PATH``, ``/finetune ...`` (the same arguments as in Slack, including
``status``, ``list``, ``cancel JOB``, ``models``, ``use MODEL_ID|base|auto`` and ``help``), ``/ask ...``, ``/jobs``, ``/cancel JOB``,
``/help``, ``/quit``. Reports are rendered from the same Block Kit messages the Slack app posts
(:func:`bot.slack.blocks.to_plain`), so the console shows what Slack would. A job runs in the
foreground with its card drawn as a live progress bar; Ctrl-C cancels it.

The console acts as one local user in one local "channel" (team ``local``), so ``/finetune``
without a dataset uses the last upload, exactly as in a Slack channel.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from bot.slack import blocks
from bot.slack.parse import (
    AskRequest,
    CancelRequest,
    FinetuneRequest,
    HelpRequest,
    ListRequest,
    ModelsRequest,
    StatusRequest,
    UseRequest,
    parse_ask,
    parse_finetune,
)
from engine import DatasetError, FtbotError, Job, NotFound, ProgressEvent

CONSOLE_HELP = """Commands:
  /upload PATH         check a JSONL dataset and keep it for fine-tuning
  /finetune [options]  fine-tune on the last upload (/finetune help lists the options)
  /ask QUESTION        ask the current model (/ask help: model=ID temperature=X max_tokens=N compare)
  /finetune models     the models; /finetune use MODEL_ID|base|auto sets the one /ask uses
  /jobs                list jobs            /cancel JOB   cancel a queued or running job
  /help                this text            /quit         leave (Ctrl-D works too)"""


class ConsoleProgress:
    """A progress sink that draws the job card as one live line and prints milestones."""

    def __init__(self, console: Console, job: Job) -> None:
        self.console = console
        self.job = job
        self.progress = blocks.JobProgress(state=str(job.state))
        self._bar_shown = False
        self._last_pct = -1
        self._shown: set[str] = set()  # caveats already printed with the verdict
        self._lock = threading.Lock()

    def _line(self) -> str:
        p = self.progress
        parts = [f"{self.job.id} {p.state}"]
        if p.total:
            parts.append(f"[{blocks.progress_bar(p.step, p.total, width=24)}] step {p.step or 0}/{p.total}")
        labels = {"loss": "loss", "eval_loss": "eval", "learning_rate": "lr", "eta": "ETA"}
        parts.extend(f"{labels[key]} {value}" for key, value in p.readings().items())
        return " · ".join(parts)

    def _end_bar(self) -> None:
        if self._bar_shown:
            self.console.write("\n", end="")
            self._bar_shown = False

    def emit(self, event: ProgressEvent) -> None:
        with self._lock:
            try:
                self._emit(event)
            except Exception as exc:  # display only: never break the job
                self.console.write(f"(display error: {type(exc).__name__})")

    def _emit(self, event: ProgressEvent) -> None:
        self.progress.apply(event)
        out = self.console
        if event.kind in ("step", "eval"):
            if out.interactive:
                out.write("\r" + self._line().ljust(100)[:160], end="")
                self._bar_shown = True
            else:
                pct = int(100 * (self.progress.step or 0) / self.progress.total) if self.progress.total else 0
                if pct // 25 != self._last_pct // 25:
                    self._last_pct = pct
                    out.write(self._line())
            return
        self._end_bar()
        data = event.data
        if event.kind == "state":
            out.write(
                f"[{self.job.id}] {data.get('state', '')}" + (f": {event.message}" if event.message else "")
            )
        elif event.kind == "preflight":
            out.show(blocks.preflight(data, event.message))
        elif event.kind == "baseline":
            out.show(blocks.baseline(data))
        elif event.kind == "alert":
            text = event.message or str(data.get("message", ""))
            if text not in self._shown:
                out.show(blocks.alert(text, data.get("code")))
        elif event.kind == "evaluation":
            self._shown |= blocks.shown_flags(data)
            out.show(blocks.eval_table(data))
            out.show(blocks.verdict(data))
            flips = blocks.flips(data)
            if flips is not None:
                out.show(flips)
        elif event.kind == "artifact" and data.get("path"):
            out.write(f"Chart ({data.get('kind', 'chart')}): {data['path']}")
        elif event.kind in ("submitted", "log") and event.message:
            out.write(event.message)


class Console:
    """A read-eval-print loop over the engine. ``engine`` is the Engine facade."""

    def __init__(
        self,
        engine: Any,
        *,
        out: TextIO | None = None,
        interactive: bool | None = None,
        team: str = "local",
        channel: str = "console",
        user: str = "you",
        max_upload_bytes: int = 100 * 1024 * 1024,
    ) -> None:
        self.engine = engine
        self.out = out or sys.stdout
        self.interactive = self.out.isatty() if interactive is None else interactive
        self.team, self.channel, self.user = team, channel, user
        self.max_upload_bytes = max_upload_bytes

    # ----- output

    def write(self, text: str, *, end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    def show(self, message: blocks.Message) -> None:
        self.write(blocks.to_plain(message))

    # ----- the loop

    def run(self, lines: Iterable[str] | None = None) -> int:
        """Read commands (from ``lines``, else the terminal) until /quit or end of input."""
        self.write("ftbot console. Type /help for the commands, /quit to leave.")
        if lines is None and Path("examples/labels.jsonl").is_file():
            # labels.jsonl with 50 epochs is the example where builtin:tiny's fine-tune visibly
            # beats its baseline (README, "Try it"); the others show the report's honesty instead.
            self.write(
                "To try it: /upload examples/labels.jsonl, then /finetune epochs=50 (about a minute "
                "here), then /ask <a customer message, e.g. I was charged twice>."
            )
        source = iter(lines) if lines is not None else None
        while True:
            try:
                if source is None:
                    line = input("> ")
                else:
                    line = next(source)
                    self.write(f"> {line}")
            except (EOFError, StopIteration):
                return 0
            except KeyboardInterrupt:
                self.write("")
                return 0
            if not self.handle(line):
                return 0

    def handle(self, line: str) -> bool:
        """Run one command line; False means quit. Errors are printed, never raised."""
        line = line.strip()
        if not line:
            return True
        command, _, rest = line.partition(" ")
        command = command.lower()
        try:
            if command in ("/quit", "/exit", "/q"):
                return False
            if command == "/help":
                self.write(CONSOLE_HELP)
            elif command == "/upload":
                self.upload(rest.strip())
            elif command == "/finetune":
                self.finetune(rest)
            elif command == "/ask":
                self.ask(rest)
            elif command == "/jobs":
                self.show(
                    blocks.jobs_list(
                        self.engine.jobs(team=self.team, channel=self.channel, limit=20), title="Jobs"
                    )
                )
            elif command == "/cancel":
                self.cancel(rest.strip())
            elif command == "/confirm":
                self.engine.confirm(rest.strip(), user=self.user, team=self.team)
                self.write(f"Confirmed {rest.strip()}.")
            else:
                self.write(f"Unknown command {command!r}. " + CONSOLE_HELP)
        except FtbotError as exc:
            self.show(blocks.error(str(exc)))
        return True

    # ----- commands

    def upload(self, raw_path: str) -> None:
        if not raw_path:
            self.write("Usage: /upload PATH (a .jsonl file of chat examples)")
            return
        path = Path(raw_path.strip("'\"")).expanduser()
        if not path.is_file():
            self.show(blocks.error(f"There is no file at {path}."))
            return
        if path.stat().st_size > self.max_upload_bytes:
            self.show(
                blocks.error(f"{path.name} is larger than the {self.max_upload_bytes / 1e6:.0f} MB limit.")
            )
            return
        try:
            record = self.engine.add_dataset(
                path, name=path.name, uploaded_by=self.user, team=self.team, channel=self.channel
            )
            report, dataset_hash = record.report, record.hash
        except DatasetError as exc:
            report, dataset_hash = exc.report, None
        usable = bool(blocks.as_dict(report).get("ok"))
        self.show(
            blocks.validation_report(report, name=path.name, dataset_hash=dataset_hash if usable else None)
        )

    def _dataset(self, ref: str | None) -> str:
        if ref is None:
            record = self.engine.latest_dataset(self.team, self.channel)
            if record is None:
                raise NotFound("No usable dataset yet.", hint="Upload one with /upload PATH.")
            return str(record.hash)
        return str(self.engine.dataset(ref, team=self.team).hash)

    def finetune(self, text: str) -> None:
        request = parse_finetune(text)
        if isinstance(request, HelpRequest):
            self.show(blocks.help_message("finetune"))
        elif isinstance(request, ListRequest):
            self.show(
                blocks.jobs_list(
                    self.engine.jobs(team=self.team, channel=self.channel, limit=20), title="Jobs"
                )
            )
        elif isinstance(request, CancelRequest):
            self.cancel(request.job_id)
        elif isinstance(request, ModelsRequest):
            choice = self.engine.model_choice(self.team, self.channel)
            self.show(
                blocks.model_list(
                    self.engine.models(self.team),
                    choice,
                    base_model=self.engine.settings.base_model,
                    channel=self.channel,
                )
            )
        elif isinstance(request, UseRequest):
            before = self.engine.model_choice(self.team, self.channel)
            after = self.engine.use_model(self.team, self.channel, request.choice, user=self.user)
            self.show(
                blocks.model_switched(
                    after, user=self.user, previous=before, base_model=self.engine.settings.base_model
                )
            )
        elif isinstance(request, StatusRequest):
            if request.job_id:
                job = self.engine.job(request.job_id, team=self.team)
            else:
                jobs = self.engine.jobs(team=self.team, channel=self.channel, limit=1)
                if not jobs:
                    self.show(blocks.jobs_list([]))
                    return
                job = jobs[0]
            self.show(blocks.job_card(job))
        elif isinstance(request, FinetuneRequest):
            self.run_job(request)

    def run_job(self, request: FinetuneRequest) -> None:
        job = request.submit(
            self.engine, self._dataset, owner=self.user, team=self.team, channel=self.channel
        )
        self.show(blocks.job_card(job))
        sink = ConsoleProgress(self, job)
        try:
            self.engine.run_job(job.id, sink)
        except KeyboardInterrupt:
            sink._end_bar()
            self.write(f"Cancelling {job.id}…")
            self.engine.cancel(job.id, user=self.user, is_admin=True, team=self.team)
        sink._end_bar()
        final = self.engine.job(job.id, team=self.team)
        self.show(
            blocks.final_summary(
                final,
                self.engine.evaluation(job.id, team=self.team),
                promoted=(final.result or {}).get("promoted"),
            )
        )

    def ask(self, text: str) -> None:
        request = parse_ask(text)
        if isinstance(request, HelpRequest):
            self.show(blocks.help_message("ask"))
            return
        assert isinstance(request, AskRequest)
        answer = request.ask(self.engine, team=self.team, channel=self.channel)
        self.show(blocks.ask_answer(answer, prompt=request.prompt))

    def cancel(self, job_id: str) -> None:
        if not job_id:
            self.write("Usage: /cancel JOB (see /jobs)")
            return
        job = self.engine.cancel(job_id, user=self.user, is_admin=True, team=self.team)
        self.write(f"{job.id}: {job.state}")
