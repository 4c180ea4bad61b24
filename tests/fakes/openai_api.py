"""A fake OpenAI API: a real HTTP server on 127.0.0.1 (a free port) for the real ``openai`` client.

It imitates the parts ftbot uses, with OpenAI's JSON shapes and error bodies:

- ``POST /v1/files`` (multipart upload, the exact bytes are kept), ``GET /v1/files/{id}`` (status
  goes through ``file_statuses``; ``file_error`` makes processing fail), ``DELETE /v1/files/{id}``
- ``POST /v1/fine_tuning/jobs`` (create), ``GET /v1/fine_tuning/jobs`` (list, ``metadata[k]=v``
  filter), ``GET /v1/fine_tuning/jobs/{id}`` (each retrieve plays the next :class:`Frame` of the
  job's script), ``.../events`` and ``.../checkpoints`` (newest first, ``after`` pages to older
  ones, like OpenAI), ``POST .../cancel``
- ``POST /v1/chat/completions``: ``answer(model, messages) -> str`` decides, so a test can make
  the base model and the ``ft:`` model answer differently. The fake counts one token per
  whitespace-separated word: an answer longer than ``max_completion_tokens`` (or ``max_tokens``)
  is cut there with ``finish_reason`` "length", and ``usage`` reports the counts (``send_usage =
  False`` leaves usage out; ``finish_reason`` forces another reason). ``ft:`` models answer only
  when a fake job made them or :meth:`FakeOpenAI.add_model` named them. With ``"stream": true``
  the same answer comes as Server-Sent Events (chunked transfer encoding), like OpenAI's:
  ``data: {chat.completion.chunk}`` lines (a role chunk, one content chunk per fake token, a
  chunk with ``finish_reason``, and with ``stream_options.include_usage`` a last chunk with empty
  ``choices`` and the ``usage``; every other chunk then has ``"usage": null``), then
  ``data: [DONE]``. ``stream_delay`` seconds pass before each chunk after the role chunk,
  ``first_byte_delay`` seconds before anything is sent (streamed or not: a slow or silent
  server), and ``stream_drop_after = n`` drops the connection after n content chunks. These
  delays are real time (not ``clock``) and end early when the server stops.

Failures are injected with :meth:`FakeOpenAI.fail` (any status and error body, ``Retry-After``,
or a dropped connection), and with ``allow_fine_tuning`` / ``fine_tunable_models`` /
``api_key``. Every request is recorded in ``requests`` for assertions.

    with FakeOpenAI() as fake:
        client = fake.client()  # the real openai.OpenAI, pointed here, without its own retries
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

DEFAULT_FINE_TUNABLE = frozenset(
    {
        "gpt-4o-mini-2024-07-18",
        "gpt-4o-2024-08-06",
        "gpt-4.1-2025-04-14",
        "gpt-4.1-mini-2025-04-14",
        "gpt-4.1-nano-2025-04-14",
    }
)


@dataclass
class Frame:
    """One step of a scripted job, played by one retrieve. ``events`` are dicts with ``message``
    and optionally ``level``, ``type`` ("message"/"metrics") and ``data``; ``checkpoints`` are
    dicts with ``step_number`` and ``metrics``. For "succeeded" the fake names the model itself
    unless ``fine_tuned_model`` is given."""

    status: str
    events: Sequence[Mapping[str, Any]] = ()
    checkpoints: Sequence[Mapping[str, Any]] = ()
    estimated_finish: int | None = None
    error: Mapping[str, Any] | None = None
    trained_tokens: int | None = None
    fine_tuned_model: str | None = None


def metrics_event(
    step: int,
    total: int,
    train_loss: float,
    valid_loss: float | None = None,
    accuracy: float | None = None,
    **extra: float,
) -> dict[str, Any]:
    """An event shaped like OpenAI's metrics events."""
    data: dict[str, Any] = {"step": step, "total_steps": total, "train_loss": train_loss}
    text = f"Step {step}/{total}: training loss={train_loss:.2f}"
    if valid_loss is not None:
        data["valid_loss"] = valid_loss
        text += f", validation loss={valid_loss:.2f}"
    if accuracy is not None:
        data["train_mean_token_accuracy"] = accuracy
    data.update(extra)
    return {"type": "metrics", "message": text, "data": data}


def success_script(now: float | None = None) -> list[Frame]:
    """A short lifecycle: validating -> queued -> running (metrics) -> succeeded. ``now`` is the
    clock the ETA is based on (estimated_finish = now + 600 s)."""
    now = time.time() if now is None else now
    return [
        Frame("validating_files", events=[{"message": "Validating training file"}]),
        Frame("queued", events=[{"message": "Files validated, moving job to queued state"}]),
        Frame(
            "running",
            events=[{"message": "Fine-tuning job started"}, metrics_event(1, 2, 1.5)],
            estimated_finish=int(now) + 600,
        ),
        Frame("running", events=[metrics_event(2, 2, 0.9)]),
        Frame("succeeded", events=[{"message": "The job has successfully completed"}], trained_tokens=1234),
    ]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # field -> (filename, content)


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: Any
    headers: dict[str, str]
    drop: bool
    times: int
    after: bool  # handle the request, then drop the answer (the work happened; the client never hears)


@dataclass
class _Job:
    record: dict[str, Any]
    frames: list[Frame]
    events: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    played: int = 0


class FakeOpenAI:
    def __init__(self, *, api_key: str = "test", clock: Callable[[], float] = time.time) -> None:
        self.api_key = api_key
        self.clock = clock
        self.requests: list[Recorded] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, _Job] = {}
        self.script: list[Frame] = success_script(clock())
        # The upload answers file_statuses[0], the k-th retrieve file_statuses[k] (the last one repeats).
        self.file_statuses: list[str] = ["uploaded", "processed"]
        self.file_error: str | None = None
        self.allow_fine_tuning = True
        self.fine_tunable_models: frozenset[str] | None = DEFAULT_FINE_TUNABLE
        self.answer: Callable[[str, list[dict[str, Any]]], str] = self._default_answer
        self.models: set[str] = set()  # extra "ft:" models that chat completions know (add_model)
        # Base models OpenAI has shut down: chat completions with them, or with a fine-tune of
        # them, get OpenAI's 404 for a retired model.
        self.retired_models: set[str] = set()
        self.send_usage = True
        self.finish_reason: str | None = None  # forced finish_reason of every completion
        self.first_byte_delay = 0.0  # seconds before a chat completion answers at all
        self.stream_delay = 0.0  # seconds before each streamed chunk after the first
        self.stream_drop_after: int | None = None  # drop a stream after this many content chunks
        # How each stream ended, in order: "done" (all sent), "client_closed" (the client hung up
        # first), "dropped" (stream_drop_after) or "stopped" (the server stopped).
        self.stream_ends: list[str] = []
        self._stopping = threading.Event()
        self._failures: list[_Failure] = []
        self._counter = 0
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # ends the delays of requests still being answered
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def client(self, key: str = "test") -> Any:
        """The real ``openai.OpenAI`` client for this server (with ``key``), without its own
        retries so that tests see each request ftbot makes."""
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0)

    # ---- scripting -------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        path: str,
        *,
        status: int = 500,
        code: str | None = None,
        message: str = "Injected failure",
        param: str | None = None,
        error_type: str = "invalid_request_error",
        headers: Mapping[str, str] | None = None,
        drop: bool = False,
        after: bool = False,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` requests matching ``method`` and the regex ``path`` (matched at
        the start of the URL path, e.g. ``/v1/fine_tuning/jobs$``) fail with this status and
        error body, or (``drop=True``) close the connection without answering; with
        ``after=True`` the request is carried out first and only the answer is lost."""
        body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
        with self._lock:
            self._failures.append(
                _Failure(
                    method.upper(),
                    re.compile(path),
                    status,
                    body,
                    dict(headers or {}),
                    drop or after,
                    times,
                    after,
                )
            )

    def requests_to(self, method: str, path: str) -> list[Recorded]:
        """Recorded requests with this method whose path matches the regex ``path`` (fullmatch)."""
        pattern = re.compile(path)
        return [r for r in self.requests if r.method == method.upper() and pattern.fullmatch(r.path)]

    def add_model(self, name: str) -> None:
        """Make ``name`` (an "ft:..." model) answer chat completions without a fake job."""
        with self._lock:
            self.models.add(name)

    def add_frames(self, remote_id: str, frames: Sequence[Frame]) -> None:
        with self._lock:
            self.jobs[remote_id].frames.extend(frames)

    @staticmethod
    def _default_answer(model: str, messages: list[dict[str, Any]]) -> str:
        return ("tuned: " if model.startswith("ft:") else "base: ") + str(messages[-1].get("content", ""))

    # ---- request handling (called by the handler thread) ------------------------------------

    def _next_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self._counter:06d}"

    def handle(self, req: Recorded) -> tuple[int, Any, dict[str, str]] | None:
        """(status, JSON body, headers), or None to drop the connection."""
        with self._lock:
            self.requests.append(req)
            for failure in self._failures:
                if failure.method == req.method and failure.pattern.match(req.path) and failure.times > 0:
                    failure.times -= 1
                    if failure.after:
                        self._route(req)
                    return None if failure.drop else (failure.status, failure.body, failure.headers)
            if req.headers.get("authorization") != f"Bearer {self.api_key}":
                return (
                    401,
                    _error(
                        "Incorrect API key provided: wr***ey. You can find your API key at "
                        "https://platform.openai.com/account/api-keys.",
                        code="invalid_api_key",
                    ),
                    {},
                )
            if not (req.method == "POST" and req.path == "/v1/chat/completions"):
                return self._route(req)
        return self._chat(req)  # outside the lock, so concurrent completions really overlap

    def _route(self, req: Recorded) -> tuple[int, Any, dict[str, str]]:
        m, p = req.method, req.path
        if m == "POST" and p == "/v1/files":
            return self._upload(req)
        if match := re.fullmatch(r"/v1/files/([^/]+)", p):
            return self._file(match.group(1), delete=m == "DELETE")
        if p == "/v1/fine_tuning/jobs":
            return self._create(req) if m == "POST" else self._list_jobs(req)
        if match := re.fullmatch(r"/v1/fine_tuning/jobs/([^/]+)(/events|/checkpoints|/cancel)?", p):
            job = self.jobs.get(match.group(1))
            if job is None:
                return (
                    404,
                    _error(f"Could not find fine-tune: {match.group(1)}", code="fine_tune_not_found"),
                    {},
                )
            action = match.group(2)
            if action is None and m == "GET":
                self._play(job)
                return 200, job.record, {}
            if action == "/events" and m == "GET":
                return 200, _page(job.events, req.query), {}
            if action == "/checkpoints" and m == "GET":
                return 200, _page(job.checkpoints, req.query), {}
            if action == "/cancel" and m == "POST":
                return self._cancel(job)
        if m == "POST" and p == "/v1/chat/completions":
            return self._chat(req)
        return 404, _error(f"Unknown path {m} {p}", code="unknown_url"), {}

    def _upload(self, req: Recorded) -> tuple[int, Any, dict[str, str]]:
        if req.form.get("purpose") != "fine-tune" or "file" not in req.files:
            return 400, _error("Expected purpose 'fine-tune' and a file", param="purpose"), {}
        filename, content = req.files["file"]
        for number, line in enumerate(content.decode("utf-8", "replace").splitlines(), start=1):
            if line.strip() and not line.lstrip().startswith("{"):
                return (
                    400,
                    _error(
                        "Expected file to have JSONL format, where every line is a valid JSON dictionary. "
                        f"Line {number} is not a dictionary.",
                        param="file",
                        code="invalid_file_format",
                    ),
                    {},
                )
        file_id = self._next_id("file")
        self.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(self.clock()),
            "filename": filename,
            "purpose": "fine-tune",
            "status": "uploaded",
            "status_details": None,
            "content": content,
            "checks": 0,
        }
        return 200, _public_file(self.files[file_id]), {}

    def _file(self, file_id: str, *, delete: bool) -> tuple[int, Any, dict[str, str]]:
        record = self.files.get(file_id)
        if record is None:
            return 404, _error(f"No such File object: {file_id}", param="id"), {}
        if delete:
            del self.files[file_id]
            return 200, {"id": file_id, "object": "file", "deleted": True}, {}
        record["checks"] += 1
        if self.file_error is not None:
            record["status"], record["status_details"] = "error", self.file_error
        else:
            statuses = self.file_statuses or ["processed"]
            record["status"] = statuses[min(record["checks"], len(statuses) - 1)]
        return 200, _public_file(record), {}

    def _create(self, req: Recorded) -> tuple[int, Any, dict[str, str]]:
        body = req.json or {}
        model = body.get("model", "")
        if not self.allow_fine_tuning:
            return (
                403,
                _error(
                    "This organization does not have access to fine-tuning. OpenAI's self-serve fine-tuning "
                    "platform is no longer available to new users."
                ),
                {},
            )
        if self.fine_tunable_models is not None and model not in self.fine_tunable_models:
            return (
                400,
                _error(
                    f"Model {model} is not available for fine-tuning or does not exist.",
                    param="model",
                    code="model_not_available",
                ),
                {},
            )
        for key in ("training_file", "validation_file"):
            file_id = body.get(key)
            if file_id is not None and file_id not in self.files:
                return 400, _error(f"Invalid file ID: {file_id}", param=key, code="invalid_file"), {}
        job_id = self._next_id("ftjob")
        hyper = (
            ((body.get("method") or {}).get("supervised") or {}).get("hyperparameters")
            or body.get("hyperparameters")
            or {}
        )
        resolved = {k: hyper.get(k, "auto") for k in ("n_epochs", "batch_size", "learning_rate_multiplier")}
        if resolved["n_epochs"] == "auto":
            resolved["n_epochs"] = 3
        record = {
            "id": job_id,
            "object": "fine_tuning.job",
            "created_at": int(self.clock()),
            "error": None,
            "fine_tuned_model": None,
            "finished_at": None,
            "hyperparameters": resolved,
            "model": model,
            "organization_id": "org-fake",
            "result_files": [],
            "seed": body.get("seed", 42),
            "status": "validating_files",
            "trained_tokens": None,
            "training_file": body.get("training_file"),
            "validation_file": body.get("validation_file"),
            "estimated_finish": None,
            "integrations": [],
            "metadata": body.get("metadata"),
            "suffix": body.get("suffix"),
            "method": {"type": "supervised", "supervised": {"hyperparameters": resolved}},
        }
        job = _Job(record=record, frames=list(self.script))
        self.jobs[job_id] = job
        self._event(job, {"message": f"Created fine-tuning job: {job_id}"})
        return 200, record, {}

    def _list_jobs(self, req: Recorded) -> tuple[int, Any, dict[str, str]]:
        wanted = {k[len("metadata[") : -1]: v for k, v in req.query.items() if k.startswith("metadata[")}
        records = [
            job.record
            for job in self.jobs.values()
            if all((job.record.get("metadata") or {}).get(k) == v for k, v in wanted.items())
        ]
        return 200, _page(records, req.query), {}

    def _play(self, job: _Job) -> None:
        if job.played >= len(job.frames) or job.record["status"] in ("succeeded", "failed", "cancelled"):
            return
        frame = job.frames[job.played]
        job.played += 1
        rec = job.record
        rec["status"] = frame.status
        rec["estimated_finish"] = frame.estimated_finish if frame.status == "running" else None
        for event in frame.events:
            self._event(job, event)
        for ckpt in frame.checkpoints:
            ckpt_id = self._next_id("ftckpt")
            step = int(ckpt["step_number"])
            job.checkpoints.append(
                {
                    "id": ckpt_id,
                    "object": "fine_tuning.job.checkpoint",
                    "created_at": int(self.clock()),
                    "fine_tuning_job_id": rec["id"],
                    "step_number": step,
                    "metrics": dict(ckpt.get("metrics") or {}),
                    "fine_tuned_model_checkpoint": f"ft:{rec['model']}:org-fake:{rec.get('suffix')}:{rec['id'][-6:]}:ckpt-step-{step}",
                }
            )
        if frame.status in ("succeeded", "failed", "cancelled"):
            rec["finished_at"] = int(self.clock())
        if frame.status == "succeeded":
            rec["fine_tuned_model"] = (
                frame.fine_tuned_model or f"ft:{rec['model']}:org-fake:{rec.get('suffix')}:{rec['id'][-6:]}"
            )
            rec["trained_tokens"] = frame.trained_tokens
        if frame.status == "failed":
            rec["error"] = dict(
                frame.error or {"code": "internal_error", "message": "Job failed", "param": None}
            )

    def _event(self, job: _Job, event: Mapping[str, Any]) -> None:
        job.events.append(
            {
                "id": self._next_id("ftevent"),
                "object": "fine_tuning.job.event",
                "created_at": int(self.clock()),
                "level": event.get("level", "info"),
                "message": event["message"],
                "data": event.get("data", {}),
                "type": event.get("type", "message"),
            }
        )

    def _cancel(self, job: _Job) -> tuple[int, Any, dict[str, str]]:
        if job.record["status"] in ("succeeded", "failed", "cancelled"):
            return 400, _error(f"Job has already completed: {job.record['status']}", code="invalid_state"), {}
        job.record["status"] = "cancelled"
        job.record["finished_at"] = int(self.clock())
        job.record["estimated_finish"] = None
        self._event(job, {"message": "Fine-tuning job cancelled"})
        return 200, job.record, {}

    def _chat(self, req: Recorded) -> tuple[int, Any, dict[str, str]] | None:
        if self.first_byte_delay > 0 and self._stopping.wait(self.first_byte_delay):
            return None  # the server stopped while "thinking": nothing was ever sent
        body = req.json or {}
        model = body.get("model", "")
        with self._lock:
            known = {
                job.record["fine_tuned_model"] for job in self.jobs.values() if job.record["fine_tuned_model"]
            } | self.models
            completion_id = self._next_id("chatcmpl")
        base = model[3:].split(":", 1)[0] if model.startswith("ft:") else model
        if base in self.retired_models:
            return (
                404,
                _error(
                    f"The model `{model}` has been deprecated, learn more here: "
                    "https://platform.openai.com/docs/deprecations",
                    code="model_not_found",
                ),
                {},
            )
        if model.startswith("ft:") and model not in known:
            return (
                404,
                _error(
                    f"The model `{model}` does not exist or you do not have access to it.",
                    code="model_not_found",
                ),
                {},
            )
        messages = body.get("messages") or []
        text = self.answer(model, messages)
        words = text.split()
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        finish_reason = "stop"
        if isinstance(limit, int) and len(words) > limit:
            words, finish_reason = words[:limit], "length"
            text = " ".join(words)
        finish_reason = self.finish_reason or finish_reason
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        if body.get("stream"):
            return 200, self._sse(body, completion_id, model, text, finish_reason, usage), {}
        return (
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(self.clock()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "finish_reason": finish_reason,
                        "logprobs": None,
                    }
                ],
                **({"usage": usage} if self.send_usage else {}),
            },
            {},
        )


    def _sse(
        self, body: Mapping[str, Any], completion_id: str, model: str, text: str, finish_reason: str, usage: Any
    ) -> _EventStream:
        """The answer as OpenAI streams it: ``chat.completion.chunk`` objects, one per fake token."""
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(self.clock()),
            "model": model,
            "system_fingerprint": None,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return {**head, "choices": [choice], **({"usage": None} if include_usage else {})}

        # Pieces whose concatenation is exactly the non-streamed text (each word with the
        # whitespace before it), so a streamed answer equals the plain one.
        pieces = re.findall(r"\s*\S+", text)
        if "".join(pieces) != text and pieces:
            pieces[-1] += text[len("".join(pieces)) :]
        events: list[tuple[float, Any]] = [(0.0, chunk({"role": "assistant", "content": "", "refusal": None}))]
        for number, piece in enumerate(pieces):
            if self.stream_drop_after is not None and number >= self.stream_drop_after:
                events.append((0.0, None))
                return _EventStream(events, self._stopping, self.stream_ends)
            events.append((self.stream_delay, chunk({"content": piece})))
        events.append((self.stream_delay, chunk({}, finish_reason)))
        if include_usage and self.send_usage:
            events.append((0.0, {**head, "choices": [], "usage": usage}))
        events.append((0.0, "[DONE]"))
        return _EventStream(events, self._stopping, self.stream_ends)


@dataclass
class _EventStream:
    """A Server-Sent Events answer: (delay before it, payload) pairs; a payload is a JSON object,
    ``"[DONE]"``, or None to drop the connection there."""

    events: list[tuple[float, Any]]
    stopping: threading.Event
    ends: list[str]  # FakeOpenAI.stream_ends


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid a 40 ms delayed ACK

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        return None

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionError:  # a client that hung up (a stream closed at its deadline): not an error
            self.close_connection = True

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Recorded(
            method=self.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("application/json") and body:
            req.json = json.loads(body)
        elif content_type.startswith("multipart/form-data"):
            req.form, req.files = _parse_multipart(content_type, body)
        answer = self.fake.handle(req)
        if answer is None:  # a dropped connection: no response at all
            self.close_connection = True
            return
        status, payload, headers = answer
        if isinstance(payload, _EventStream):
            self._stream(payload)
            return
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, answer: _EventStream) -> None:
        """Send ``answer`` as ``text/event-stream`` in HTTP/1.1 chunks, one event per chunk."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for delay, payload in answer.events:
                if delay > 0 and answer.stopping.wait(delay):
                    answer.ends.append("stopped")
                    self.close_connection = True
                    return
                if payload is None:  # drop: no final chunk, the client sees a broken body
                    answer.ends.append("dropped")
                    self.close_connection = True
                    return
                text = payload if isinstance(payload, str) else json.dumps(payload)
                data = f"data: {text}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            answer.ends.append("done")
        except OSError:  # the client closed the stream (a deadline passed): stop sending
            answer.ends.append("client_closed")
            self.close_connection = True

    do_GET = do_POST = do_DELETE = _serve


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """A byte-exact multipart/form-data parser (the stdlib one may touch line endings)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    form: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    if not match:
        return form, files
    delimiter = b"--" + match.group(1).encode()
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, _, content = chunk.partition(b"\r\n\r\n")
        headers = head.decode("utf-8", "replace")
        name = re.search(r'name="([^"]*)"', headers)
        filename = re.search(r'filename="([^"]*)"', headers)
        if not name:
            continue
        if filename:
            files[name.group(1)] = (filename.group(1), content)
        else:
            form[name.group(1)] = content.decode("utf-8", "replace")
    return form, files


def _public_file(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("content", "checks")}


def _page(items_oldest_first: Sequence[Mapping[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """OpenAI's cursor page: newest first; ``after`` continues with items older than that id."""
    items = list(reversed(items_oldest_first))
    after = query.get("after")
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    limit = int(query.get("limit") or 20)
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}


def _error(
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    error_type: str = "invalid_request_error",
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}
