"""``ftbot chat``: the Slack workflow in a terminal, on the same engine, with no Slack.

Commands: ``/upload PATH``, ``/finetune ...`` (the same arguments as in Slack, including
``status``, ``list``, ``cancel JOB``, ``models``, ``use MODEL_ID|base|auto`` and ``help``),
``/ask ...``, ``/jobs``, ``/cancel JOB``, ``/help``, ``/quit``. Reports are rendered from the same
Block Kit messages the Slack app posts (:func:`bot.slack.blocks.to_plain`), so the console shows
what Slack would.

**One local workspace.** The console acts as one local user in the local workspace that the CLI
uses too (:data:`bot.commands.common.LOCAL_TEAM` / ``LOCAL_CHANNEL``): a fine-tune made here is
what ``ftbot ask`` answers with, ``ftbot jobs`` and ``ftbot models`` list it, and ``/finetune``
without a dataset uses the workspace's latest upload (``/upload`` here or ``ftbot run``), exactly
as in a Slack channel.

**Jobs run in the background.** ``/finetune`` queues the job and returns to the prompt at once;
the engine's scheduler (started by the console when it first needs it) runs it in a worker
process, as for the Slack app. A follower thread reads the job's events from the store and prints
them: milestones (state changes, estimate, baseline, evaluation, verdict) on lines of their own,
training steps as one live line. On a terminal the prompt and what was typed so far are drawn
again below anything printed while waiting for input, and the live line is kept just above the
prompt. Meanwhile every command works (``/jobs``, ``/cancel JOB``, ``/ask``, ``/finetune
status``). The console does not use the engine's ``sink_for`` relay because that relay keeps one
cursor per database, shared with a Slack bot on the same FTBOT_HOME.

**Leaving while a job runs.** The worker is its own process (its own session), so it outlives the
console: a job left running finishes on its own and records its result, ``ftbot jobs`` shows how
it ended, and the next ``ftbot chat`` follows it again (a queued job starts when ``ftbot chat`` or
``ftbot serve`` runs next). So ``/quit`` (also ``Ctrl-D`` and ``Ctrl-C`` at the prompt) while a
job of this workspace is active first says so, and how to cancel it; the next quit leaves.

**Ctrl-C never cancels a job** (``/cancel JOB`` does): at the prompt it is a request to leave (as
above); during a command (a long ``/ask``) it abandons that command and returns to the prompt.

**Scripts.** With input from a pipe or a list of lines (``ftbot chat < script``, tests), the end
of the input waits for the jobs the console follows to end, so a script's ``/finetune`` runs to
its verdict, as ``ftbot run`` does.

**Comments.** Outside ``/ask``, a word that starts with ``#`` (a ``#`` at the start of the line or
after a space, outside quotes) begins a comment that runs to the end of the line, as in a shell:
``/finetune epochs=50   # a long run`` passes ``epochs=50``. An ``/ask`` question is taken as
typed, ``#`` included (``/ask what does C# do? # really`` asks all of it). A leading ``> `` pasted
with a command from the README's walkthrough is ignored too.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bot.commands.common import LOCAL_CHANNEL, LOCAL_TEAM
from bot.dispatch import PARSERS, dispatch
from bot.job_progress import JobProgress
from bot.progress_view import LIVE_KINDS, console_live_line, console_output
from bot.slack import blocks
from bot.slack.blockkit import Message, as_dict
from bot.slack.parse import (
    FINETUNE_SUBCOMMANDS,
    AskRequest,
    CancelRequest,
    FinetuneRequest,
    HelpRequest,
    ListRequest,
    ModelsRequest,
    StatusRequest,
    UseRequest,
    suggest,
)
from engine import DatasetError, FtbotError, Job, JobState, NotFound, ProgressEvent

PROMPT = "> "

CONSOLE_HELP = """Commands:
  /upload PATH         check a JSONL dataset and keep it for fine-tuning
  /finetune [options]  fine-tune on the last upload, in the background (/finetune help: the options)
  /finetune status     the latest job's card     /jobs  every job     /cancel JOB  stop a job
  /ask QUESTION        ask the current model (/ask help: model=ID temperature=X max_tokens=N compare)
  /finetune models     the models; /finetune use MODEL_ID|base|auto sets the one /ask uses
  /help                this text                 /quit  leave (Ctrl-D and Ctrl-C too)
A job's progress prints here while you go on typing. Leaving while a job runs asks first; the job
then keeps running on its own (`ftbot jobs` shows how it ends, the next `ftbot chat` follows it).
Ctrl-C never cancels a job: /cancel JOB does.
Outside /ask, `# ...` after a command is a comment; an /ask question is taken as typed, # and all."""

CONSOLE_FINETUNE_HINT = "Upload a dataset with /upload PATH and run /finetune to make one."

# Terminal control: clear the whole line; save / restore the cursor; cursor up one line.
_CLEAR_LINE = "\r\x1b[2K"
_SAVE, _RESTORE, _UP = "\x1b7", "\x1b8", "\x1b[1A"


def strip_comment(text: str) -> str:
    """``text`` without a trailing comment: from the first ``#`` that starts a word (at the start
    or after whitespace) outside quotes to the end, then trailing spaces. A quote counts only where
    a word starts (``"my #1.jsonl"``), so an apostrophe inside a word (``it's``) opens nothing."""
    quote: str | None = None
    for i, char in enumerate(text):
        word_start = i == 0 or text[i - 1].isspace()
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"" and word_start:
            quote = char
        elif char == "#" and word_start:
            return text[:i].rstrip()
    return text


def _without_pasted_prompt(line: str) -> str:
    """``> /upload x`` (a command copied with the README's prompt) is ``/upload x``."""
    if line.startswith(">"):
        rest = line[1:].lstrip()
        if rest.startswith("/"):
            return rest
    return line


def _line_buffer() -> str:
    """What the person has typed at the prompt so far (GNU readline), else ""."""
    readline = sys.modules.get("readline")
    if readline is None:
        return ""
    try:
        return str(readline.get_line_buffer())
    except Exception:  # an editline build without it, or no line being read
        return ""


_FINAL_STATES = frozenset(state.value for state in JobState if state.is_final)


class ConsoleProgress:
    """A progress sink that draws the job card as one live line and prints milestones."""

    def __init__(self, console: Console, job: Job) -> None:
        self.console = console
        self.job = job
        self.progress = JobProgress(state=str(job.state))
        self._last_pct = -1
        self._shown: set[str] = set()  # caveats already printed with the verdict
        self._lock = threading.Lock()

    def _line(self) -> str:
        return console_live_line(self.job.id, self.progress)

    def emit(self, event: ProgressEvent, *, draw: bool = True) -> None:
        """Show ``event``. ``draw=False``: a training step only updates the numbers (a later
        one draws the live line)."""
        with self._lock:
            try:
                self._emit(event, draw)
            except Exception as exc:  # display only: never break the job
                self.console.write(f"(display error: {type(exc).__name__})")

    def emit_all(self, events: list[ProgressEvent]) -> None:
        """Show a batch of events read together: a run of training steps draws the live line
        once, with the last numbers (a fast job writes many steps between two looks)."""
        for event, following in zip(events, [*events[1:], None], strict=True):
            quiet = event.kind in LIVE_KINDS and following is not None and following.kind in LIVE_KINDS
            self.emit(event, draw=not quiet)

    def _emit(self, event: ProgressEvent, draw: bool = True) -> None:
        self.progress.apply(event)
        out = self.console
        if event.kind in LIVE_KINDS:
            if self.progress.state in _FINAL_STATES:
                return  # a step the worker logged as it was being stopped: the job has ended
            if out.interactive:
                if draw:
                    out.live(self._line()[:160])
            else:
                pct = int(100 * (self.progress.step or 0) / self.progress.total) if self.progress.total else 0
                if pct // 25 != self._last_pct // 25:
                    self._last_pct = pct
                    out.write(self._line())
            return
        for item in console_output(event, self._shown, self.job.id):
            if isinstance(item, str):
                out.write(item)
            else:
                out.show(item)


@dataclass
class _Followed:
    """A job whose events the console prints: its sink and the last event shown."""

    sink: ConsoleProgress
    after_seq: int = 0


class Console:
    """A read-eval-print loop over the engine. ``engine`` is the Engine facade.

    ``team`` / ``channel``: where the console works; the default is the local workspace the CLI
    uses too. ``poll_seconds``: how often the follower thread looks for new job events.
    Output methods (:meth:`write`, :meth:`show`, :meth:`live`) may be called from any thread.
    """

    def __init__(
        self,
        engine: Any,
        *,
        out: TextIO | None = None,
        interactive: bool | None = None,
        team: str = LOCAL_TEAM,
        channel: str = LOCAL_CHANNEL,
        user: str = "you",
        max_upload_bytes: int = 100 * 1024 * 1024,
        poll_seconds: float = 0.2,
    ) -> None:
        self.engine = engine
        self.out = out or sys.stdout
        self.interactive = self.out.isatty() if interactive is None else interactive
        self.team, self.channel, self.user = team, channel, user
        self.max_upload_bytes = max_upload_bytes
        self.poll_seconds = poll_seconds
        # Output state, guarded by _out_lock (the follower thread prints while the loop reads).
        self._out_lock = threading.RLock()
        self._prompt_shown = False  # the loop waits at a terminal prompt (input() is drawing it)
        self._live_open = False  # the live progress line is on screen without its newline
        self._live_above_prompt = False  # ... or it is the line right above the prompt
        self._guard_prompt = False  # set by run(): input from a terminal shown on a terminal
        # Followed jobs, guarded by _jobs (a Condition: the end of a script waits on it).
        self._jobs = threading.Condition()
        self._followed: dict[str, _Followed] = {}
        self._follower: threading.Thread | None = None
        self._stop = threading.Event()
        self._started_queue = False
        self._quit_warned = False
        # The console's own commands (/finetune and /ask go through bot.dispatch): name -> what
        # runs it, given the rest of the line, stripped.
        self._commands: dict[str, Callable[[str], None]] = {
            "/help": self.show_help,
            "/upload": self.upload,
            "/jobs": self.list_jobs,
            "/cancel": self.cancel,
            "/confirm": self.confirm,
        }

    # ----- output

    def write(self, text: str, *, end: str = "\n") -> None:
        """Print ``text`` on lines of its own: after the live line, and above the prompt (drawn
        again with what was typed so far) when the loop is waiting for input."""
        with self._out_lock:
            if self._prompt_shown:
                self.out.write(_CLEAR_LINE)
                self._live_above_prompt = False
            elif self._live_open:
                self.out.write("\n")
                self._live_open = False
            self.out.write(text + end)
            if self._prompt_shown:
                self.out.write(PROMPT + _line_buffer())
            self.out.flush()

    def show(self, message: Message) -> None:
        self.write(blocks.to_plain(message))

    def live(self, text: str) -> None:
        """Draw ``text`` as the live line (rewritten in place by the next call): at the prompt,
        the line above it; otherwise the current line."""
        with self._out_lock:
            if self._prompt_shown:
                if self._live_above_prompt:
                    self.out.write(_SAVE + _UP + _CLEAR_LINE + text + _RESTORE)
                else:
                    self.out.write(_CLEAR_LINE + text + "\n" + PROMPT + _line_buffer())
                    self._live_above_prompt = True
            else:
                self.out.write(_CLEAR_LINE + text)
                self._live_open = True
            self.out.flush()

    def _enter_prompt(self) -> None:
        with self._out_lock:
            if not self._guard_prompt:
                return
            # The live line ends here, so it sits right above the prompt input() draws next.
            self._live_above_prompt = self._live_open
            if self._live_open:
                self.out.write("\n")
                self.out.flush()
                self._live_open = False
            self._prompt_shown = True

    def _leave_prompt(self) -> None:
        with self._out_lock:
            self._prompt_shown = False
            self._live_above_prompt = False  # the typed line now sits between them

    # ----- the loop

    def run(self, lines: Iterable[str] | None = None) -> int:
        """Read commands (from ``lines``, else standard input) until /quit or the end of input.
        Returns 0. See the module docstring for Ctrl-C, Ctrl-D and the end of a script."""
        terminal = lines is None and sys.stdin.isatty()
        self._guard_prompt = terminal and self.interactive
        if terminal:
            # Line editing and history for input(); what was typed is redrawn from its buffer.
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401
        self.write("ftbot console. Type /help for the commands, /quit to leave.")
        if lines is None and Path("examples/labels.jsonl").is_file():
            # labels.jsonl is the example where the fine-tune clearly beats both baselines on the
            # default base model (README, "Try it"); sentiment.jsonl is where prompting is enough.
            self.write(
                "To try it: /upload examples/labels.jsonl, then /finetune (a few minutes on a small CPU; "
                "it runs in the background and ends with a verdict), then /ask <a customer message, "
                "e.g. My parcel has been stuck at the depot for a week>."
            )
        source: Iterator[str] | None = iter(lines) if lines is not None else None
        try:
            self._follow_active_jobs()
            while True:
                try:
                    line = self._read(source, terminal=terminal)
                except KeyboardInterrupt:
                    self.write("")
                    if self._quit_requested():
                        return 0
                    continue
                except (EOFError, StopIteration):
                    if terminal:  # Ctrl-D at the prompt: like /quit
                        self.write("")
                        if self._quit_requested():
                            return 0
                        continue
                    self._wait_for_jobs()  # the end of a script: its jobs end first
                    return 0
                if not self.handle(line):
                    return 0
        finally:
            self._shutdown()

    def _read(self, source: Iterator[str] | None, *, terminal: bool) -> str:
        """The next command line. Raises EOFError / StopIteration at the end of the input, and
        KeyboardInterrupt for Ctrl-C at the prompt."""
        if source is None and terminal:
            self._enter_prompt()
            try:
                return input(PROMPT)
            finally:
                self._leave_prompt()
        if source is None:  # a pipe: no prompt to draw; echo each command like a list of lines
            line = sys.stdin.readline()
            if not line:
                raise EOFError
            line = line.rstrip("\r\n")
        else:
            line = next(source)
        self.write(f"{PROMPT}{line}")
        return line

    def handle(self, line: str) -> bool:
        """Run one command line; False means leave. Errors are printed, never raised."""
        line = _without_pasted_prompt(line.strip())
        if not line or line.startswith("#"):
            return True
        command, _, rest = line.partition(" ")
        command = command.lower()
        if command != "/ask":  # a question keeps its '#' (see the module docstring)
            rest = strip_comment(rest)
        try:
            if command in ("/quit", "/exit", "/q"):
                return not self._quit_requested()
            if command in PARSERS:  # /finetune and /ask: the Slack app's command table
                dispatch(command, rest, self)
            elif command in self._commands:
                self._commands[command](rest.strip())
            else:
                self._unknown(command)
        except FtbotError as exc:
            self.show(blocks.error(str(exc)))
        except KeyboardInterrupt:  # Ctrl-C during a command abandons it; jobs go on
            self.write(f"(interrupted: {command} was abandoned; jobs keep running)")
        return True

    def _unknown(self, command: str) -> None:
        """A typo (/uplaod), a missing slash (upload) or a /finetune subcommand (/status): say
        what was probably meant, then the help."""
        word = command.lstrip("/")
        known = ("/upload", "/finetune", "/ask", "/jobs", "/cancel", "/confirm", "/help", "/quit")
        if word in FINETUNE_SUBCOMMANDS:
            meant: str | None = f"/finetune {word}"
        else:
            sub = suggest(word, FINETUNE_SUBCOMMANDS)
            meant = suggest(f"/{word}", known) or (f"/finetune {sub}" if sub else None)
        hint = f" Did you mean {meant}?" if meant else ""
        self.write(f"Unknown command {command!r}.{hint} " + CONSOLE_HELP)

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
        usable = bool(as_dict(report).get("ok"))
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

    # ----- /finetune and /ask (bot.dispatch.Handler: the requests Slack's commands answer too)

    def on_help(self, request: HelpRequest) -> None:
        self.show(blocks.help_message(request.topic))

    def on_list(self, request: ListRequest) -> None:
        self.list_jobs("")

    def on_cancel(self, request: CancelRequest) -> None:
        self.cancel(request.job_id)

    def on_models(self, request: ModelsRequest) -> None:
        choice = self.engine.model_choice(self.team, self.channel)
        self.show(
            blocks.model_list(
                self.engine.models(self.team),
                choice,
                base_model=self.engine.settings.base_model,
                channel=self.channel,
            )
        )

    def on_use(self, request: UseRequest) -> None:
        before = self.engine.model_choice(self.team, self.channel)
        after = self.engine.use_model(self.team, self.channel, request.choice, user=self.user)
        self.show(
            blocks.model_switched(
                after, user=self.user, previous=before, base_model=self.engine.settings.base_model
            )
        )

    def on_status(self, request: StatusRequest) -> None:
        if request.job_id:
            job = self.engine.job(request.job_id, team=self.team)
        else:
            jobs = self.engine.jobs(team=self.team, channel=self.channel, limit=1)
            if not jobs:
                self.show(blocks.jobs_list([]))
                return
            job = jobs[0]
        with self._jobs:
            followed = self._followed.get(job.id)
        # A job followed here shows its live numbers (step, loss, ETA) on its card.
        progress = followed.sink.progress if followed is not None and not job.is_final else None
        self.show(blocks.job_card(job, progress))

    def on_start(self, request: FinetuneRequest) -> None:
        self.start_job(request)

    def start_job(self, request: FinetuneRequest) -> Job:
        """Submit the job and return at once: the queue runs it, the follower prints it."""
        self._ensure_queue()
        # The console's user is the local operator, trusted like an admin (Engine.submit): any
        # base model, no limit on unfinished jobs.
        job = self.engine.submit(
            self._dataset(request.dataset),
            options=dict(request.options),
            owner=self.user,
            team=self.team,
            channel=self.channel,
            eval_dataset_hash=self._dataset(request.eval_dataset) if request.eval_dataset else None,
            is_admin=True,
        )
        self.show(blocks.job_card(job))
        self._quit_warned = False  # a new job: leaving asks again
        self.write(
            f"{job.id} runs in the background; its progress prints here. Meanwhile every command "
            f"works: /jobs, /finetune status, /ask ..., /cancel {job.id}."
        )
        self._follow(job, from_start=True)
        return job

    def on_ask(self, request: AskRequest) -> None:
        answer = request.ask(self.engine, team=self.team, channel=self.channel)
        self.show(blocks.ask_answer(answer, prompt=request.prompt, finetune_hint=CONSOLE_FINETUNE_HINT))

    # ----- the console's own commands

    def show_help(self, _rest: str = "") -> None:
        self.write(CONSOLE_HELP)

    def list_jobs(self, _rest: str = "") -> None:
        self.show(
            blocks.jobs_list(self.engine.jobs(team=self.team, channel=self.channel, limit=20), title="Jobs")
        )

    def confirm(self, job_id: str) -> None:
        self.engine.confirm(job_id, user=self.user, team=self.team)
        self.write(f"Confirmed {job_id}.")

    def cancel(self, job_id: str) -> None:
        if not job_id:
            self.write("Usage: /cancel JOB (see /jobs)")
            return
        job = self.engine.cancel(job_id, user=self.user, is_admin=True, team=self.team)
        self.write(f"{job.id}: {job.state}")

    # ----- jobs in the background

    def _ensure_queue(self) -> None:
        """Start the engine's scheduler (the job queue) unless it runs already."""
        if not self.engine.scheduler.running:
            self.engine.start()
            self._started_queue = True

    def _follow_active_jobs(self) -> None:
        """Follow the workspace's jobs left active by an earlier console (or ``ftbot run``)."""
        active = self.engine.jobs(team=self.team, channel=self.channel, active_only=True, limit=20)
        if not active:
            return
        self._ensure_queue()  # a queued one starts; a running one whose console left is adopted
        for job in reversed(active):  # oldest first
            self.write(
                f"{job.id} is {job.state.value} (started before this console); its progress "
                f"prints here. /cancel {job.id} stops it."
            )
            self._follow(job, from_start=False)

    def _follow(self, job: Job, *, from_start: bool) -> None:
        """Print ``job``'s events from now on (``from_start``: all of them) until it ends."""
        after = 0
        if not from_start:
            events = self.engine.events(job.id)
            after = (events[-1].seq or 0) if events else 0
        with self._jobs:
            if job.id in self._followed:
                return
            self._followed[job.id] = _Followed(ConsoleProgress(self, job), after)
            if self._follower is None:
                self._follower = threading.Thread(
                    target=self._follow_loop, name="ftbot-console-follow", daemon=True
                )
                self._follower.start()

    def _follow_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            with self._jobs:
                followed = list(self._followed.items())
            for job_id, item in followed:
                if self._stop.is_set():
                    return
                self._pump(job_id, item)

    def _pump(self, job_id: str, item: _Followed) -> None:
        try:
            # The job first: when it is final, every event up to its end is in the read below
            # (a state change and its event are written in one transaction).
            job = self.engine.job(job_id)
            events = self.engine.events(job_id, after_seq=item.after_seq)
            if events:
                item.after_seq = events[-1].seq or item.after_seq
                item.sink.emit_all(events)
            if job.is_final:
                self.show(
                    blocks.final_summary(
                        job,
                        self.engine.evaluation(job_id),
                        promoted=(job.result or {}).get("promoted"),
                    )
                )
        except Exception as exc:  # display only: the job itself goes on
            job = None
            self.write(
                f"(cannot show {job_id}'s progress any more: {type(exc).__name__}; "
                f"/finetune status {job_id} shows where it is)"
            )
        if job is None or job.is_final:
            with self._jobs:
                self._followed.pop(job_id, None)
                self._jobs.notify_all()

    def _active_jobs(self) -> list[Job]:
        """The followed jobs that have not ended, as they are now."""
        with self._jobs:
            ids = list(self._followed)
        jobs = []
        for job_id in ids:
            try:
                job = self.engine.job(job_id)
            except FtbotError:
                continue
            if not job.is_final:
                jobs.append(job)
        return jobs

    def _quit_requested(self) -> bool:
        """True: leave now. With a job active, the first request explains what leaving does."""
        active = self._active_jobs()
        if not active:
            return True
        ids = ", ".join(job.id for job in active)
        if self._quit_warned:
            self.write(
                f"Leaving. {ids} keeps running in the background: `ftbot jobs` shows how it ends, "
                "and the next `ftbot chat` follows it again."
            )
            return True
        self._quit_warned = True
        lines = []
        for job in active:
            if job.state is JobState.QUEUED:
                lines.append(
                    f"{job.id} is queued: if you leave, it starts when `ftbot chat` (or `ftbot serve`) "
                    "runs next."
                )
            else:
                lines.append(
                    f"{job.id} is still running ({job.state.value}): if you leave, it keeps running in the "
                    "background and records its result (`ftbot jobs` shows how it ends; the next "
                    "`ftbot chat` follows it again)."
                )
        lines.append(
            " ".join(f"/cancel {job.id}" for job in active)
            + " stops it. To leave anyway: /quit again (or Ctrl-D, Ctrl-C)."
        )
        self.write("\n".join(lines))
        return False

    def _wait_for_jobs(self) -> None:
        """At the end of a script: wait until the followed jobs end (Ctrl-C stops waiting)."""
        active = self._active_jobs()
        if not active:
            return
        self.write(
            f"End of input: waiting for {', '.join(job.id for job in active)} to end "
            "(Ctrl-C leaves it running in the background)."
        )
        try:
            with self._jobs:
                while self._followed and self._follower is not None and self._follower.is_alive():
                    self._jobs.wait(1.0)
        except KeyboardInterrupt:
            self.write("Leaving; the job keeps running in the background: `ftbot jobs` shows how it ends.")

    def _shutdown(self) -> None:
        """Stop following (jobs go on) and stop the queue if this console started it."""
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=10)
            self._follower = None
        self._stop.clear()
        with self._jobs:
            self._followed.clear()
        if self._started_queue:
            self._started_queue = False
            self.engine.stop()
        with self._out_lock:
            if self._live_open:
                self.out.write("\n")
                self.out.flush()
                self._live_open = False
