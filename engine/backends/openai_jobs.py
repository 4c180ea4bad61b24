"""The lifecycle of a remote OpenAI fine-tuning job: upload, create, poll, follow, cancel.

Holds no job state: a new instance given the stored remote id and cursor carries on where the old
one stopped. The clock and the sleep are injected (tests drive a fake server and take seconds).

    jobs.start(job_id, train_path, eval_path=None, *, model, hyperparameters=None, seed=None,
               sink=None) -> remote_id ("ftjob-...")
        Uploads the files (purpose "fine-tune", bytes unchanged), waits until OpenAI has
        processed them, creates the job (method=supervised with n_epochs / batch_size /
        learning_rate_multiplier (the top-level ``hyperparameters`` is deprecated in openai 3.x),
        suffix "ftbot-<job_id>" (<= 18 chars), seed, metadata {"ftbot_job_id": job_id})
        and emits a ``submitted`` event (data["remote_id"]) at once. If a remote job carrying this
        job id already exists (a restart between create and store), it is reused: never two jobs.

    jobs.poll(remote_id, cursor=None, *, job_id=None) -> PollResult
        ONE step, no sleeping (the caller calls it every settings.openai_poll_seconds, with
        :func:`~engine.backends.openai_events.poll_delay` as backoff). Returns the new
        ProgressEvents since ``cursor`` (:mod:`engine.backends.openai_events`), ``status``
        (OpenAI's), ``done``, ``model_name`` ("ft:..." on success), ``error``/``error_code``
        (plain words), the new opaque ``cursor`` string to store, ``transient`` (network failure,
        429, 5xx, a rejected key: the job is NOT failed, keep polling), ``eta_seconds`` and
        ``trained_tokens``. OpenAI's validating_files / queued / running are all our ``training``
        state; succeeded -> evaluate ``model_name``; failed -> fail the job with ``error``;
        cancelled -> cancelled.

    jobs.follow(remote_id, sink, cursor=None, *, job_id=None, should_stop=None,
                max_seconds=None) -> PollResult     a blocking loop over poll(), sleeping between polls.
    jobs.cancel(remote_id) -> str                    OpenAI's status after the request.
    jobs.find_remote_job(job_id) -> str | None       the remote job whose metadata names job_id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import openai

from engine.backends.openai_client import Requester
from engine.backends.openai_dates import fine_tuning_end
from engine.backends.openai_errors import (
    NO_RETRY_429,
    TRANSIENT,
    UNCERTAIN_CODES,
    file_rejected,
    is_persistent,
    retry_after,
    translate_error,
)
from engine.backends.openai_events import (
    TERMINAL_STATUSES,
    PollCursor,
    PollResult,
    lost_touch,
    poll_delay,
    read_job,
)
from engine.backends.openai_models import check_base_model, job_suffix, normalise_hyperparameters
from engine.errors import FtbotError, RemoteError, UsageError
from engine.progress import NullSink, ProgressEvent, ProgressSink
from engine.settings import Settings

MAX_UPLOAD_BYTES = 512 * 1024 * 1024
#: The metadata key naming our job id on the remote job (how a restart finds it again).
METADATA_KEY = "ftbot_job_id"


class OpenAIJobs:
    """Start, follow and cancel remote fine-tuning jobs through one :class:`Requester`. Called
    from one thread at a time per job."""

    def __init__(
        self,
        requests: Requester,
        *,
        settings: Settings,
        clock: Callable[[], float],
        file_poll_seconds: float = 2.0,
        file_timeout_seconds: float = 1800.0,
    ) -> None:
        self._requests = requests
        self._client = requests.client
        self._settings = settings
        self._clock = clock
        self._file_poll_seconds = file_poll_seconds
        self._file_timeout_seconds = file_timeout_seconds

    # ---- start ------------------------------------------------------------------------------

    def start(
        self,
        job_id: str,
        train_path: Path | str,
        eval_path: Path | str | None = None,
        *,
        model: str,
        hyperparameters: Mapping[str, Any] | None = None,
        seed: int | None = None,
        sink: ProgressSink | None = None,
    ) -> str:
        """Upload, create the remote job, emit ``submitted`` and return its id (``ftjob-...``).

        Raises:
            UsageError: bad model name or hyperparameters, file too large.
            RemoteError: OpenAI refused (codes in :mod:`engine.backends.openai_errors`). Nothing
                is left running: uploaded files are deleted when the job could not be created.
        """
        sink = sink or NullSink()
        check_base_model(model)
        hyper = normalise_hyperparameters(hyperparameters or {})
        existing = self.find_remote_job(job_id)
        if existing is not None:
            sink.emit(
                ProgressEvent(
                    job_id,
                    "submitted",
                    f"Following the OpenAI job {existing} created earlier.",
                    data={"remote_id": existing, "model": model, "resumed": True},
                )
            )
            return existing
        uploaded: list[str] = []
        try:
            train_file = self._upload(job_id, Path(train_path), "train", sink)
            uploaded.append(train_file)
            eval_file = None
            if eval_path is not None:
                eval_file = self._upload(job_id, Path(eval_path), "eval", sink)
                uploaded.append(eval_file)
            for file_id, path in zip(uploaded, [train_path, eval_path], strict=False):
                self._wait_processed(file_id, Path(path))
            params: dict[str, Any] = {
                "model": model,
                "training_file": train_file,
                "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
                "suffix": job_suffix(job_id),
                "metadata": {METADATA_KEY: job_id},
            }
            if eval_file:
                params["validation_file"] = eval_file
            if seed is not None:
                params["seed"] = int(seed)
            remote = self._create_job(job_id, params, model)
        except FtbotError as exc:
            # After a network error or 5xx on create, the job may exist on OpenAI: keep its files
            # (a later start() finds the job by its metadata). Otherwise leave nothing behind.
            if getattr(exc, "code", None) not in UNCERTAIN_CODES:
                for file_id in uploaded:
                    self._delete_file_quietly(file_id)
            raise
        sink.emit(
            ProgressEvent(
                job_id,
                "submitted",
                f"Submitted to OpenAI as {remote.id} (status {remote.status}).",
                data={
                    "remote_id": remote.id,
                    "model": model,
                    "training_file": train_file,
                    "validation_file": eval_file,
                    "hyperparameters": hyper,
                    "status": remote.status,
                },
            )
        )
        return remote.id

    def find_remote_job(self, job_id: str) -> str | None:
        """The id of the newest remote job whose metadata names ``job_id``, or None."""
        page = self._requests.call(
            lambda: self._client.fine_tuning.jobs.list(metadata={METADATA_KEY: job_id}, limit=10),
            action="checking OpenAI for this job",
            retry_transient=True,
        )
        for job in page.data:
            if (job.metadata or {}).get(METADATA_KEY) == job_id:
                return job.id
        return None

    def _upload(self, job_id: str, path: Path, role: str, sink: ProgressSink) -> str:
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"Cannot read the {role} file {path}: {exc.strerror or exc}.") from exc
        if len(content) > MAX_UPLOAD_BYTES:
            raise UsageError(
                f"The {role} file {path.name} is {len(content) / 2**20:.0f} MB; OpenAI accepts at most 512 MB."
            )
        name = f"{job_id}-{role}.jsonl"
        uploaded = self._requests.call(
            lambda: self._client.files.create(file=(name, content, "application/jsonl"), purpose="fine-tune"),
            action=f"uploading the {role} file",
            retry_transient=True,
            upload_of=path.name,
        )
        sink.emit(
            ProgressEvent(
                job_id,
                "log",
                f"Uploaded the {role} file to OpenAI ({len(content):,} bytes) as {uploaded.id}.",
                data={"file_id": uploaded.id, "role": role, "bytes": len(content)},
            )
        )
        return uploaded.id

    def _wait_processed(self, file_id: str, path: Path) -> None:
        deadline = self._clock() + self._file_timeout_seconds
        while True:
            info = self._requests.call(
                lambda: self._client.files.retrieve(file_id),
                action="checking an uploaded file",
                retry_transient=True,
            )
            if info.status == "processed":
                return
            if info.status == "error":
                details = getattr(info, "status_details", None) or "no details given"
                raise file_rejected(path.name, details)
            if self._clock() >= deadline:
                raise RemoteError(
                    f"OpenAI has not finished processing {path.name} ({file_id}) after "
                    f"{self._file_timeout_seconds:.0f} s. Try again later.",
                    code="file_processing_timeout",
                )
            self._requests.sleep(self._file_poll_seconds)

    def _create_job(self, job_id: str, params: dict[str, Any], model: str) -> Any:
        """jobs.create, retried on 429; after a network error or 5xx the job may exist anyway, so
        look for it (by metadata) before trying again."""
        action = "creating the fine-tuning job"
        attempt = 0
        while True:
            try:
                return self._client.fine_tuning.jobs.create(**params)
            except openai.RateLimitError as exc:
                if exc.code in NO_RETRY_429 or attempt + 1 >= self._requests.max_attempts:
                    raise self._job_error(exc, action, model) from exc
                wait = retry_after(exc) or self._requests.backoff(attempt)
            except TRANSIENT as exc:
                # The request may have reached OpenAI although the answer did not reach us.
                found = self.find_remote_job(job_id)
                if found is not None:
                    return self._requests.call(
                        lambda found=found: self._client.fine_tuning.jobs.retrieve(found),
                        action=action,
                        retry_transient=True,
                    )
                if attempt + 1 >= self._requests.max_attempts:
                    raise self._job_error(exc, action, model) from exc
                wait = self._requests.backoff(attempt)
            except openai.OpenAIError as exc:
                raise self._job_error(exc, action, model) from exc
            self._requests.sleep(wait)
            attempt += 1

    def _job_error(self, exc: BaseException, action: str, model: str) -> FtbotError:
        """A failed jobs.create in plain words; OpenAI's refusal to fine-tune names this
        installation's end date (:func:`~engine.backends.openai_dates.fine_tuning_end`)."""
        return translate_error(
            exc,
            action=action,
            model=model,
            fine_tuning=True,
            fine_tuning_ends=fine_tuning_end(self._settings),
        )

    def _delete_file_quietly(self, file_id: str) -> None:
        # Cleanup only: a file left behind can be deleted by hand; never hide the real error.
        with contextlib.suppress(openai.OpenAIError):
            self._client.files.delete(file_id)

    # ---- follow -----------------------------------------------------------------------------

    def poll(self, remote_id: str, cursor: str | None = None, *, job_id: str | None = None) -> PollResult:
        """One look at the remote job; never sleeps and never raises for a failed request (the
        result is ``transient``: keep polling). Raises only for a programming error."""
        cur = PollCursor.parse(cursor)
        try:
            job = self._client.fine_tuning.jobs.retrieve(remote_id)
            raw_events = self._new_events(remote_id, cur.event)
            checkpoints = (
                self._new_checkpoints(remote_id, cur.checkpoint)
                if job.status in ("running", "succeeded")
                else []
            )
        except (openai.OpenAIError, OSError) as exc:
            err = translate_error(exc, action="checking the fine-tuning job")
            return lost_touch(
                remote_id, cur, job_id, err, persistent=is_persistent(exc), retry_after=retry_after(exc)
            )
        return read_job(
            job_id or (job.metadata or {}).get(METADATA_KEY) or remote_id,
            remote_id,
            job,
            raw_events,
            checkpoints,
            cur,
            now=self._clock(),
            price_overrides=self._settings.openai_training_prices,
        )

    def follow(
        self,
        remote_id: str,
        sink: ProgressSink | None = None,
        cursor: str | None = None,
        *,
        job_id: str | None = None,
        should_stop: Callable[[], bool] | None = None,
        max_seconds: float | None = None,
    ) -> PollResult:
        """Poll until the job ends (or ``should_stop()``, or ``max_seconds``), emitting events to
        ``sink`` and sleeping settings.openai_poll_seconds (with backoff) between polls."""
        sink = sink or NullSink()
        started = self._clock()
        while True:
            result = self.poll(remote_id, cursor, job_id=job_id)
            for event in result.events:
                sink.emit(event)
            cursor = result.cursor
            if result.done or (should_stop is not None and should_stop()):
                return result
            if max_seconds is not None and self._clock() - started >= max_seconds:
                return result
            failures = PollCursor.parse(cursor).failures
            self._requests.sleep(
                poll_delay(self._settings.openai_poll_seconds, failures, retry_after=result.retry_after)
            )

    def cancel(self, remote_id: str) -> str:
        """Ask OpenAI to cancel; returns the status it reports (a job that already ended keeps its
        final status rather than raising)."""
        try:
            job = self._requests.call(
                lambda: self._client.fine_tuning.jobs.cancel(remote_id),
                action="cancelling the fine-tuning job",
                retry_transient=True,
                raw_status=True,
            )
        except openai.BadRequestError as exc:
            job = self._requests.call(
                lambda: self._client.fine_tuning.jobs.retrieve(remote_id),
                action="checking the fine-tuning job",
                retry_transient=True,
            )
            if job.status not in TERMINAL_STATUSES:
                raise translate_error(exc, action="cancelling the fine-tuning job") from exc
        return job.status

    def _new_events(self, remote_id: str, after_id: str | None) -> list[Any]:
        """Events newer than ``after_id``, oldest first. OpenAI lists newest first and pages
        towards older ones, so read pages until the known event appears."""
        return _newer_than(
            lambda after: self._client.fine_tuning.jobs.list_events(remote_id, limit=100, **after), after_id
        )

    def _new_checkpoints(self, remote_id: str, after_id: str | None) -> list[Any]:
        return _newer_than(
            lambda after: self._client.fine_tuning.jobs.checkpoints.list(remote_id, limit=100, **after),
            after_id,
        )


def _newer_than(
    fetch: Callable[[dict[str, str]], Any], known_id: str | None, max_pages: int = 50
) -> list[Any]:
    """The items ``fetch`` pages through (newest first) until ``known_id``, oldest first."""
    collected: list[Any] = []
    after: dict[str, str] = {}
    for _ in range(max_pages):
        page = fetch(after)
        for item in page.data:
            if item.id == known_id:
                return collected[::-1]
            collected.append(item)
        if not page.data or page.has_more is False:
            break
        after = {"after": page.data[-1].id}
    return collected[::-1]
