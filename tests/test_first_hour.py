"""The newcomer's first hour (issue 11, point 5): the console and the ``ftbot`` CLI are one local
workspace; a console job runs in the background while the console keeps answering; ``/ask``
before any fine-tune says that the base model answered; commands pasted from the README with a
trailing ``# comment`` work.

All real: the Engine on SQLite under tmp_path, worker processes training builtin:tiny, the
console fed line by line from a queue (as a person types) while it runs on its own thread, and
the real CLI through click's CliRunner.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import queue
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import main as cli
from bot.commands.common import LOCAL_CHANNEL, LOCAL_TEAM
from bot.console import Console
from engine import Engine, Job, JobState, Settings, Store
from tests.fakes.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
# With LONG_DATA examples, long enough (about a thousand steps) that the job is still training
# while the test works with the console, whatever the machine's speed; every such job is cancelled.
LONG_RUN = "epochs=50"
LONG_DATA = 200


# ------------------------------------------------------------------ helpers


def _dataset(tmp_path: Path, n: int = 40, name: str = "prices.jsonl") -> Path:
    lines = (ROOT / "examples" / "prices.jsonl").read_text().splitlines(keepends=True)
    path = tmp_path / name
    path.write_text("".join(lines[:n]))
    return path


def _cli(settings: Settings, *args: str) -> Any:
    env = {"FTBOT_HOME": str(settings.home), "FTBOT_ASK_MAX_NEW_TOKENS": "8"}
    return CliRunner().invoke(cli, list(args), env=env)


class _Screen(io.StringIO):
    """The console's output: written by its threads while the test reads it."""

    def __init__(self, *, tty: bool) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._tty = tty

    def write(self, text: str) -> int:
        with self._lock:
            return super().write(text)

    def getvalue(self) -> str:
        with self._lock:
            return super().getvalue()

    def isatty(self) -> bool:
        return self._tty


class _Keyboard:
    """The console's input, typed by the test: a line, a KeyboardInterrupt (Ctrl-C at the prompt)
    or None (the end of the input). Unlike a generator it goes on after raising."""

    def __init__(self) -> None:
        self.keys: queue.Queue[str | BaseException | None] = queue.Queue()

    def __iter__(self) -> _Keyboard:
        return self

    def __next__(self) -> str:
        item = self.keys.get(timeout=600)  # a test that forgot to end its input still ends
        if item is None:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item


class RunningConsole:
    """``Console.run`` on its own thread, typed into line by line."""

    def __init__(self, engine: Engine, *, interactive: bool = True) -> None:
        self.screen = _Screen(tty=interactive)
        self.keyboard = _Keyboard()
        self.console = Console(engine, out=self.screen, interactive=interactive)
        self.code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-console", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.code = self.console.run(self.keyboard)
        except BaseException as exc:  # the test asserts there was none
            self.error = exc

    @property
    def text(self) -> str:
        return self.screen.getvalue()

    def type(self, line: str | BaseException | None) -> int:
        """Type ``line``; returns where the output stood before it (for :meth:`after`)."""
        mark = len(self.text)
        self.keyboard.keys.put(line)
        return mark

    def after(self, mark: int) -> str:
        return self.text[mark:]

    def wait_output(self, mark: int, *fragments: str, timeout: float = 60.0) -> str:
        """The output since ``mark`` once it holds every fragment (the test fails otherwise)."""
        wait_for(
            lambda: all(f in self.after(mark) for f in fragments) or not self.thread.is_alive(),
            timeout,
            f"console output {fragments}",
        )
        out = self.after(mark)
        assert all(f in out for f in fragments), f"{fragments} not in console output:\n{out[-3000:]}"
        return out

    def finish(self, timeout: float = 60.0) -> str:
        """End the input and wait for the console to leave; its whole output."""
        self.type(None)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the console did not leave:\n{self.text[-3000:]}"
        assert self.error is None, repr(self.error)
        return self.text


def _worker_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


@contextlib.contextmanager
def _engine(settings: Settings) -> Iterator[Engine]:
    """A real Engine; afterwards every job still active is cancelled and its worker waited for,
    so a failing test leaves no training process behind."""
    engine = Engine(settings)
    try:
        yield engine
    finally:
        pids = []
        for job in engine.jobs(active_only=True, limit=100):
            pids.append(job.worker_pid)
            with contextlib.suppress(Exception):
                engine.cancel(job.id, user="test", is_admin=True)
        try:
            wait_for(lambda: not any(_worker_alive(p) for p in pids), 60, "workers to stop")
        finally:
            engine.close()


def _job_training(engine: Engine, timeout: float = 300.0) -> Job:
    """The one job, once it trains (the baseline comes first)."""

    def training() -> bool:
        jobs = engine.jobs(limit=5)
        return bool(jobs) and jobs[0].state is JobState.TRAINING

    wait_for(training, timeout, "the job to train")
    return engine.jobs(limit=1)[0]


def _prompt_lines_start_their_line(text: str) -> None:
    """Milestones and the live progress line never run into an echoed command."""
    for line in text.split("\n"):
        if "> /" in line:
            assert line.startswith("> /"), f"garbled line: {line!r}"


# ------------------------------------------------------------------ 1. one local workspace


@pytest.mark.slow
def test_a_fine_tune_made_in_the_console_is_the_clis_model(settings: Settings, tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    with _engine(settings) as engine:
        out = io.StringIO()
        # The end of a script's input waits for its jobs (as `ftbot chat < script` does).
        Console(engine, out=out, interactive=False).run([f"/upload {data}", "/finetune epochs=1"])
        (job,) = engine.jobs()
        assert job.state is JobState.SUCCEEDED, out.getvalue()[-3000:]
        model_id = job.model_id
        assert model_id
        # Whatever the verdict, the console's choice makes it the local workspace's model.
        out = io.StringIO()
        Console(engine, out=out, interactive=False).run([f"/finetune use {model_id}"])
        assert f"made {model_id}" in out.getvalue() or model_id in out.getvalue()

    jobs = _cli(settings, "jobs", "--json")
    assert jobs.exit_code == 0, jobs.output
    assert [row["job_id"] for row in json.loads(jobs.stdout)] == [job.id]

    models = _cli(settings, "models", "--json")
    assert models.exit_code == 0, models.output
    (row,) = json.loads(models.stdout)
    assert row["id"] == model_id and row["current"] is True

    named = _cli(settings, "ask", "--model", model_id, "--json", "A used bike")
    assert named.exit_code == 0, named.output
    assert json.loads(named.stdout)["model"] == model_id

    current = _cli(settings, "ask", "--json", "A used bike")
    assert current.exit_code == 0, current.output
    assert json.loads(current.stdout)["model"] == model_id
    assert "No fine-tuned model" not in current.stderr

    # And the other way round: the CLI's choice is the console's.
    assert _cli(settings, "models", "--use", "base").exit_code == 0
    with _engine(settings) as engine:
        out = io.StringIO()
        Console(engine, out=out, interactive=False).run(["/finetune models"])
    assert "the base model builtin:tiny alone, chosen by" in out.getvalue()


def test_the_console_and_the_cli_use_the_same_constants(settings: Settings, tmp_path: Path) -> None:
    data = _dataset(tmp_path, n=20)
    with _engine(settings) as engine:
        console = Console(engine, out=io.StringIO(), interactive=False)
        assert (console.team, console.channel) == (LOCAL_TEAM, LOCAL_CHANNEL)
        console.run([f"/upload {data}"])
        # What `ftbot run` would find as the workspace's latest upload is the console's.
        latest = engine.latest_dataset(LOCAL_TEAM, LOCAL_CHANNEL)
        assert latest is not None and latest.name == "prices.jsonl"


def test_an_earlier_consoles_workspace_is_migrated_into_the_local_one(tmp_path: Path) -> None:
    """A database written by an earlier version, where the console worked in team "local",
    channel "console", and the CLI in team "", channel "": after the upgrade both are one."""
    import sqlite_utils

    from engine.store import MIGRATIONS

    home = tmp_path / "home"
    home.mkdir()
    path = home / "ftbot.db"
    old = sqlite_utils.Database(path)
    MIGRATIONS.apply(old, stop_before="0006_local_workspace")
    at = "2026-11-01T09:00:00+00:00"
    later = "2026-11-02T09:00:00+00:00"
    for job_id, team, channel in (("ft-console1", "local", "console"), ("ft-cli0001", "", "")):
        old["jobs"].insert(
            {
                "id": job_id,
                "backend": "local",
                "base_model": "builtin:tiny",
                "dataset_hash": "d" * 64,
                "state": "succeeded",
                "team": team,
                "channel": channel,
                "owner": "you",
                "created_at": at,
                "updated_at": at,
                "model_id": job_id,
                "result": "{}",
                "config": "{}",
                "reply_to": "{}",
            }
        )
        old["models"].insert(
            {
                "id": job_id,
                "kind": "local_adapter",
                "base_model": "builtin:tiny",
                "path": str(tmp_path / job_id),
                "job_id": job_id,
                "team": team,
                "channel": channel,
                "verdict": "improved",
                "created_at": at,
            }
        )
        old["datasets"].insert(
            {
                "hash": job_id * 4,
                "name": f"{job_id}.jsonl",
                "path": str(tmp_path / f"{job_id}.jsonl"),
                "size": 1,
                "uploaded_by": "you",
                "team": team,
                "channel": channel,
                "report": json.dumps({"ok": True}),
                "usable": 1,
                "created_at": at,
            }
        )
    # The CLI's workspace: the rule promoted its model. The console's: promoted later, then a
    # person chose the base model. The person's choice stands; the rule's latest pick is kept.
    old["defaults"].insert_all(
        [
            {
                "team": "",
                "channel": "",
                "model_id": "ft-cli0001",
                "set_by": "promotion rule",
                "set_at": at,
                "choice": "auto",
                "promoted_id": "ft-cli0001",
                "promoted_at": at,
            },
            {
                "team": "local",
                "channel": "console",
                "model_id": None,
                "set_by": "you",
                "set_at": later,
                "choice": "base",
                "promoted_id": "ft-console1",
                "promoted_at": later,
            },
        ]
    )
    old.conn.close()

    settings = Settings.from_env({"FTBOT_HOME": str(home)})
    with Engine(settings) as engine:
        assert {m.id for m in engine.models(LOCAL_TEAM)} == {"ft-console1", "ft-cli0001"}
        choice = engine.model_choice(LOCAL_TEAM, LOCAL_CHANNEL)
        assert (choice.mode, choice.chooser, choice.promoted.id) == ("base", "you", "ft-console1")
        assert engine.latest_dataset(LOCAL_TEAM, LOCAL_CHANNEL).name == "ft-cli0001.jsonl"
        out = io.StringIO()
        Console(engine, out=out, interactive=False).run(["/jobs", "/finetune models"])
        text = out.getvalue()
        assert "ft-console1" in text and "ft-cli0001" in text
        assert engine.use_model(LOCAL_TEAM, LOCAL_CHANNEL, "auto", user="you").model_id == "ft-console1"

    models = _cli(settings, "models", "--json")
    assert {row["id"] for row in json.loads(models.stdout)} == {"ft-console1", "ft-cli0001"}
    # Applied once; opening again changes nothing.
    with Store.open(path) as store:
        assert store.schema_migrations().count("0006_local_workspace") == 1
        assert store.models("local") == [] and store.jobs(team="local") == []
        assert store.default_choice(LOCAL_TEAM, LOCAL_CHANNEL).model_id == "ft-console1"


# ------------------------------------------------------------------ 2. jobs in the background


@pytest.mark.slow
def test_the_console_answers_while_its_job_trains_and_cancels_it(settings: Settings, tmp_path: Path) -> None:
    data = _dataset(tmp_path, n=LONG_DATA)
    with _engine(settings) as engine:
        con = RunningConsole(engine, interactive=True)
        mark = con.type(f"/upload {data}")
        con.wait_output(mark, "Ready: prices.jsonl")
        mark = con.type(f"/finetune {LONG_RUN}   # a long run, cancelled below")
        con.wait_output(mark, "Fine-tune ft-")
        job = _job_training(engine)
        assert job.config["epochs"] == 50  # the comment was not read as options
        con.wait_output(mark, f"[{job.id}] training")
        con.wait_output(mark, "\r\x1b[2K" + f"{job.id} training · [")  # the live line

        mark = con.type("/jobs")
        listed = con.wait_output(mark, "Jobs")
        assert any(job.id in line and "training" in line for line in listed.splitlines()), listed

        mark = con.type("/finetune status")
        con.wait_output(mark, f"Fine-tune {job.id}", "training")

        mark = con.type("/ask A used bike")
        con.wait_output(mark, "Answered by", timeout=120)

        mark = con.type("/quit")
        warned = con.wait_output(mark, "still running (training)")
        assert f"/cancel {job.id}" in warned and "background" in warned
        assert con.thread.is_alive() and engine.job(job.id).state is JobState.TRAINING

        mark = con.type(f"/cancel {job.id}")
        con.wait_output(mark, f"{job.id}: cancelled", f"Fine-tune {job.id} was cancelled.")
        assert engine.job(job.id).state is JobState.CANCELLED
        wait_for(lambda: not _worker_alive(job.worker_pid), 60, "the worker to stop")
        text = con.finish()
    assert con.code == 0
    _prompt_lines_start_their_line(text)
    assert "Traceback" not in text


@pytest.mark.slow
def test_ctrl_c_and_quit_leave_the_job_running_and_the_next_console_follows_it(
    settings: Settings, tmp_path: Path
) -> None:
    data = _dataset(tmp_path, n=LONG_DATA)
    with _engine(settings) as engine:
        con = RunningConsole(engine, interactive=False)
        con.type(f"/upload {data}")
        mark = con.type(f"/finetune {LONG_RUN}")
        job = _job_training(engine)
        con.wait_output(mark, f"[{job.id}] training")

        # Ctrl-C at the prompt never cancels the job: it asks first, like /quit.
        mark = con.type(KeyboardInterrupt())
        warned = con.wait_output(mark, "still running (training)")
        assert con.thread.is_alive() and engine.job(job.id).state is JobState.TRAINING
        assert "Ctrl-C" in warned
        mark = con.type(KeyboardInterrupt())
        con.thread.join(30)
        assert not con.thread.is_alive() and con.code == 0 and con.error is None
        assert "keeps running" in con.after(mark)
        job = engine.job(job.id)
        assert job.state is JobState.TRAINING and _worker_alive(job.worker_pid)

        # The next console (the next `ftbot chat`) follows it again, and can cancel it.
        again = RunningConsole(engine, interactive=False)
        start = again.wait_output(0, job.id, "training")
        assert "/cancel" in start
        mark = again.type(f"/cancel {job.id}")
        again.wait_output(mark, f"Fine-tune {job.id} was cancelled.")
        again.finish()
        wait_for(lambda: not _worker_alive(job.worker_pid), 60, "the worker to stop")


class Terminal:
    """``python -m bot chat`` on a pseudo-terminal (so standard input and output are a tty, as
    for a person): what it draws is collected by a reader thread."""

    def __init__(self, home: Path, cwd: Path) -> None:
        master, slave = pty.openpty()
        env = {**os.environ, "FTBOT_HOME": str(home), "TERM": "xterm"}
        for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"):
            env.pop(name, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "chat"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self._raw = bytearray()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, name="test-pty", daemon=True).start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    return
                with self._lock:
                    self._raw += chunk
            elif self.proc.poll() is not None:
                return

    @property
    def text(self) -> str:
        with self._lock:
            return self._raw.decode("utf-8", "replace")

    def type(self, keys: str) -> int:
        mark = len(self.text)
        os.write(self.master, keys.encode())
        return mark

    def wait_output(self, mark: int, *fragments: str, timeout: float = 60.0) -> str:
        wait_for(
            lambda: all(f in self.text[mark:] for f in fragments), timeout, f"terminal output {fragments}"
        )
        return self.text[mark:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)


@pytest.mark.slow
def test_ftbot_chat_on_a_terminal_keeps_the_prompt_and_ctrl_c_leaves_the_job_running(
    settings: Settings, tmp_path: Path
) -> None:
    data = _dataset(tmp_path, n=LONG_DATA)
    term = Terminal(settings.home, tmp_path)
    try:
        term.wait_output(0, "ftbot console", "> ")
        term.wait_output(term.type(f"/upload {data}\n"), "Ready: prices.jsonl")
        mark = term.type(f"/finetune {LONG_RUN}\n")
        job_id = term.wait_output(mark, "Fine-tune ft-").split("Fine-tune ", 1)[1][:11]
        # Milestones clear the prompt's line, print, and draw the prompt again below.
        term.wait_output(mark, f"\r\x1b[2K[{job_id}] training", timeout=300)
        term.wait_output(mark, f"{job_id} training · [")  # the live line
        # /jobs answers while it trains (its line, not the live line, names the owner).
        term.wait_output(term.type("/jobs\n"), "Jobs", f"{job_id} training · builtin:tiny by @you")

        # Ctrl-C at the prompt (the terminal sends SIGINT to the console, never to the worker,
        # which has a session of its own): the first one explains, the second one leaves.
        mark = len(term.text)
        term.proc.send_signal(signal.SIGINT)
        warned = term.wait_output(mark, "still running (training)", f"/cancel {job_id}")
        assert term.proc.poll() is None and "Ctrl-C" in warned
        mark = len(term.text)
        term.proc.send_signal(signal.SIGINT)
        assert term.proc.wait(30) == 0
        assert "keeps running in the background" in term.text[mark:]
        assert "Traceback" not in term.text
    finally:
        term.close()
    with _engine(settings) as engine:
        job = engine.job(job_id)
        assert job.state is JobState.TRAINING and _worker_alive(job.worker_pid)
        # _engine cancels it and waits for its worker


# ------------------------------------------------------------------ 3. /ask before any fine-tune


@pytest.mark.slow
def test_ask_before_any_fine_tune_says_the_base_model_answers(settings: Settings) -> None:
    with _engine(settings) as engine:
        out = io.StringIO()
        Console(engine, out=out, interactive=False).run(["/ask A used bike"])
        first = out.getvalue()
    assert "No fine-tuned model in this channel yet" in first
    assert "base model builtin:tiny" in first and "/upload" in first and "/finetune" in first

    as_json = _cli(settings, "ask", "--json", "A used bike")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["base_reason"] == "no_finetune"  # stdout is only the JSON
    assert "No fine-tuned model here yet" in as_json.stderr and "ftbot run" in as_json.stderr
    plain = _cli(settings, "ask", "A used bike")
    assert plain.exit_code == 0
    assert "No fine-tuned model" not in plain.stdout and "No fine-tuned model here yet" in plain.stderr

    # A person chose the base model: it says so, not "no fine-tune yet".
    assert _cli(settings, "models", "--use", "base").exit_code == 0
    chosen = _cli(settings, "ask", "A used bike")
    assert "by choice" in chosen.stderr and "No fine-tuned model" not in chosen.stderr
    with _engine(settings) as engine:
        out = io.StringIO()
        Console(engine, out=out, interactive=False).run(["/ask A used bike", "/ask model=base A used bike"])
        text = out.getvalue()
    by_choice, asked_for_base = text.split("> /ask model=base")
    assert "by choice" in by_choice and "No fine-tuned model" not in by_choice
    assert "by choice" not in asked_for_base and "No fine-tuned model" not in asked_for_base


# ------------------------------------------------------------------ 4. pasted commands with comments


@pytest.mark.slow
def test_trailing_comments_and_a_pasted_prompt_are_ignored_outside_ask(
    settings: Settings, tmp_path: Path
) -> None:
    data = _dataset(tmp_path, n=20)
    odd = _dataset(tmp_path, n=20, name="my #1 set.jsonl")
    with _engine(settings) as engine:
        out = io.StringIO()
        Console(engine, out=out, interactive=False).run(
            [
                "# a line that is only a comment",
                f"> /upload {data}          # validation report: 20 examples",
                f'/upload "{odd}"   # a quoted path keeps its #',
                "/jobs                                  # state of every job",
                "/finetune status   # the latest job",
                "/finetune models   # the models",
                "/finetune use base # the base model alone",
                "/cancel ft-00000000   # a typo",
                "/ask model=base what does C# do?   # part of the question",
            ]
        )
        text = out.getvalue()
        assert engine.model_choice(LOCAL_TEAM, LOCAL_CHANNEL).mode == "base"
    assert "Unknown command" not in text
    assert "Ready: prices.jsonl" in text and "Ready: my #1 set.jsonl" in text
    assert "There is no file" not in text
    assert text.count("No fine-tune jobs") == 2  # /jobs and /finetune status
    assert "takes no arguments" not in text and "needs exactly one" not in text
    assert "made the base model builtin:tiny alone" in text
    assert "No job 'ft-00000000'." in text  # the id alone, without the comment
    assert "Question: what does C# do?   # part of the question" in text
