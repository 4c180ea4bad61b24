"""A job's backend-independent steps, which the job runner (:mod:`engine.runner`) calls.

Every backend's jobs go through the same states with the same files, keys and events; what
differs is how they generate answers and train (:class:`engine.backends.Backend`). This module
holds what is the same, with generation injected:

- :class:`JobContext`: the job, its run directory, its progress sink (events go to SQLite),
  cancellation (:meth:`JobContext.check` raises :class:`Cancelled`) and state changes.
- :func:`prepare_data` (**validating**): the eval split (the user's eval file, or a deterministic
  held-out split), the leakage check, the recorded split; moves the job on to ``baseline``.
- :func:`measure_baseline` (**baseline**): the base model zero-shot and few-shot, scored, saved to
  ``baseline.json`` (a resumed job reuses it); moves the job on to ``training``.
- :func:`finish_evaluation` (**evaluating**): the report, the predictions file, the chart, the
  model registered, the promotion rule; the job ``succeeded``.

Stdlib and engine modules only: no ML library is imported here (tests/test_architecture.py).
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC
from pathlib import Path
from typing import Any

from engine import charts, dataset, evaluate, prompts
from engine.config import TrainConfig
from engine.errors import DatasetNotFound, FtbotError, InvalidTransition, JobNotFound, UsageError
from engine.jobs import Job, JobState
from engine.paths import run_dir
from engine.progress import ProgressEvent, utcnow
from engine.settings import Settings
from engine.store import PROMOTION_RULE, DefaultChoice, ModelRecord, Store

# How often should_stop() looks at the job's state in the database (seconds).
_STATE_POLL_SECONDS = 0.5


class Cancelled(Exception):
    """The job was cancelled (or ended from outside) while a pipeline was running it, or the
    pipeline's ``stop_flag`` was set (the worker got SIGTERM; the engine is stopping)."""


# --------------------------------------------------------------------------- context


class StoreSink:
    """A progress sink that appends every event to the job's log in SQLite (the scheduler relays
    it to the job's card)."""

    def __init__(self, store: Store, job_id: str) -> None:
        self._store = store
        self._job_id = job_id

    def emit(self, event: ProgressEvent) -> None:
        if event.job_id != self._job_id:
            event = replace(event, job_id=self._job_id)
        if event.at is None:
            event = replace(event, at=utcnow())
        self._store.add_event(event)


@dataclass
class JobContext:
    """What a pipeline needs: the job, where to write (``dir``, the job's run directory), how to
    report (``sink``: SQLite), whether to stop (``should_stop`` / ``check``)."""

    store: Store
    settings: Settings
    job_id: str
    stop_flag: threading.Event = field(default_factory=threading.Event)
    _last_check: float = -1e9
    _stopped: bool = False

    def __post_init__(self) -> None:
        self.sink = StoreSink(self.store, self.job_id)
        self.dir = run_dir(self.settings, self.job_id)
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def job(self) -> Job:
        return self.store.get_job(self.job_id)

    def emit(self, kind: str, message: str = "", **kw: Any) -> None:
        self.sink.emit(ProgressEvent(self.job_id, kind, message, **kw))

    def alert(self, code: str, message: str, **data: Any) -> None:
        self.emit("alert", message, data={"code": code, **data})

    def record(self, **result: Any) -> None:
        self.store.update_job(self.job_id, result=result)

    def should_stop(self) -> bool:
        """True once the job was cancelled (SIGTERM, or its state became final in the database)."""
        if self._stopped or self.stop_flag.is_set():
            self._stopped = True
            return True
        now = time.monotonic()
        if now - self._last_check >= _STATE_POLL_SECONDS:
            self._last_check = now
            with contextlib.suppress(JobNotFound):
                self._stopped = self.store.get_job(self.job_id).is_final
        return self._stopped

    def check(self) -> None:
        if self.should_stop():
            raise Cancelled()

    def advance(self, to: JobState, message: str, **changes: Any) -> Job:
        """Move the job on; raise :class:`Cancelled` when it was ended from outside meanwhile."""
        try:
            return self.store.transition(self.job_id, to, message=message, changes=changes or None)
        except InvalidTransition as exc:
            raise Cancelled() from exc


# --------------------------------------------------------------------------- step 1: data


@dataclass(frozen=True)
class EvalData:
    train: list[list[dict[str, Any]]]  # messages lists
    eval: list[list[dict[str, Any]]]
    source: str  # "file" | "holdout"
    leakage: int
    system_prompt: str | None


def _messages(example: Any) -> list[dict[str, Any]]:
    messages = example.messages if hasattr(example, "messages") else example["messages"]
    return [dict(m) for m in messages]


def _common_system_prompt(examples: Sequence[Sequence[Mapping[str, Any]]]) -> str | None:
    """The system prompt most training examples use (so /ask can use it too), if any."""
    prompts = Counter(
        m.get("content")
        for ex in examples
        for m in ex[:1]
        if m.get("role") == "system" and isinstance(m.get("content"), str)
    )
    if not prompts:
        return None
    text, count = prompts.most_common(1)[0]
    return text if count * 2 >= len(examples) else None


def _load_examples(path: Path) -> list[Any]:

    if not Path(path).is_file():
        raise DatasetNotFound(
            f"The stored copy of this dataset ({Path(path).name}) is missing from the data directory.",
            hint="Upload the file again and start a new job.",
        )

    # read_examples yields the usable examples (invalid lines were reported at upload time).
    return [ex for ex in dataset.read_examples(path) if getattr(ex, "ok", True)]


def prepare_data(ctx: JobContext) -> EvalData:
    """Step 1: the training and eval examples (deterministic: a resumed job gets the same split)."""

    job = ctx.job
    config = TrainConfig.from_dict(job.config)
    record = ctx.store.get_dataset(job.dataset_hash)
    examples = _load_examples(record.path)
    if job.eval_dataset_hash:
        eval_record = ctx.store.get_dataset(job.eval_dataset_hash)
        train_ex, eval_ex = examples, _load_examples(eval_record.path)
        source = "file"
    else:
        train_ex, eval_ex = dataset.split(examples, eval_fraction=config.eval_fraction, seed=config.seed)
        source = "holdout"
    leaks = list(dataset.leakage(train_ex, eval_ex))
    leaked_lines = {pair[0] for pair in leaks}
    if leaked_lines:  # train on them and the eval would measure memory, not skill
        train_ex = [ex for ex in train_ex if getattr(ex, "line", None) not in leaked_lines]
    train = [_messages(ex) for ex in train_ex]
    evals = [_messages(ex) for ex in eval_ex]
    if not train or not evals:
        raise UsageError(
            f"Not enough examples to train and evaluate: {len(train)} for training, {len(evals)} for evaluation.",
            hint="Add more examples (at least 10 usable ones), or give a separate eval file.",
        )
    if job.state is JobState.VALIDATING:
        if leaks:
            ctx.alert(
                "leakage",
                f"{len(leaked_lines)} training example(s) ask the same question as an eval example; they were "
                "left out of training so the evaluation stays honest.",
                pairs=[list(p)[:2] for p in leaks[:20]],
            )
        split_info = {
            "source": source,
            "train_examples": len(train),
            "eval_examples": len(evals),
            "leakage": len(leaks),  # (train line, eval line) pairs with the same prompt
            "left_out_of_training": len(leaked_lines),
            "eval_dataset_hash": job.eval_dataset_hash,
            "eval_fraction": None if source == "file" else config.eval_fraction,
            "seed": config.seed,
        }
        ctx.record(eval_split=split_info, versions=library_versions())
        what = "your eval file" if source == "file" else f"a held-out {config.eval_fraction:.0%} split"
        ctx.advance(
            JobState.BASELINE,
            f"Dataset ready: {len(train)} training examples; evaluating on {len(evals)} examples from {what}. "
            "Measuring the base model first.",
        )
    return EvalData(train, evals, source, len(leaks), _common_system_prompt(train))


def library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


# --------------------------------------------------------------------------- step 2: baseline


def job_model_record(
    ctx: JobContext,
    *,
    model_id: str,
    kind: str,
    system_prompt: str | None,
    path: Path | None = None,
    remote_name: str | None = None,
) -> ModelRecord:
    """The registry record of the model ``ctx``'s job made: its base model, team and channel are
    the job's; a backend names the model (``model_id``, ``kind``) and where it lives (``path`` for
    an adapter here, ``remote_name`` for a remote fine-tune)."""
    job = ctx.job
    return ModelRecord(
        id=model_id,
        kind=kind,
        base_model=job.base_model,
        job_id=job.id,
        team=job.team,
        channel=job.channel,
        created_at=utcnow(),
        path=path,
        remote_name=remote_name,
        system_prompt=system_prompt,
    )


def log_answers(ctx: JobContext, label: str, done: int, total: int) -> None:
    """A ``log`` event for generation progress (``label``: which model and prompts)."""
    ctx.emit("log", f"{label}: {done}/{total} answers", step=done, total=total, data={"phase": label})


def saved_baseline(ctx: JobContext, data: EvalData) -> dict[str, Any] | None:
    """``baseline.json`` when it was measured on exactly these eval prompts, else None."""

    path = ctx.dir / "baseline.json"
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    eval_prompts = [prompts.eval_prompt(ex) for ex in data.eval]
    references = [prompts.reference(ex) for ex in data.eval]
    if saved.get("references") == references and saved.get("prompts") == eval_prompts:
        return saved
    return None


Generate = Callable[[Sequence[Sequence[Mapping[str, Any]]], int, str], list[str]]
"""``generate(conversations, max_new_tokens, label) -> answers``, in order."""


def measure_baseline(
    ctx: JobContext,
    data: EvalData,
    *,
    generate: Generate,
    token_counter: Callable[[list[dict[str, Any]]], int],
    context_tokens: int,
    max_new_tokens_cap: int,
    metric: str | None,
    seed: int,
) -> dict[str, Any]:
    """The base model zero-shot and few-shot on the eval split, scored, for any backend (generation
    injected). Saved to ``<run dir>/baseline.json`` (reused when a resumed job asks again with the
    same prompts), the job's ``result`` (``baseline``, ``task``, ``metric``) and a ``baseline``
    event. Moves a job in ``baseline`` on to ``training``. Returns the saved record."""

    eval_prompts = [prompts.eval_prompt(ex) for ex in data.eval]
    references = [prompts.reference(ex) for ex in data.eval]
    path = ctx.dir / "baseline.json"
    saved = saved_baseline(ctx, data)
    if saved is not None:
        if ctx.job.state is JobState.BASELINE:
            ctx.advance(JobState.TRAINING, "Baseline measured. Fine-tuning now.")
        return saved

    max_new = prompts.max_new_tokens(references, token_counter, cap=max_new_tokens_cap)
    shots = prompts.select_shots(
        data.train,
        eval_prompts=eval_prompts,
        token_counter=token_counter,
        context_tokens=context_tokens,
        max_new_tokens=max_new,
        seed=seed,
    )
    started = time.monotonic()
    zero = generate(eval_prompts, max_new, "baseline zero-shot")
    zero_seconds = time.monotonic() - started
    ctx.check()
    started = time.monotonic()
    few = generate([prompts.few_shot_prompt(p, shots) for p in eval_prompts], max_new, "baseline few-shot")
    few_seconds = time.monotonic() - started
    report = evaluate.build_report(references, {"zero_shot": zero, "few_shot": few}, metric=metric, seed=seed)
    saved = {
        "task": report["task"],
        "metric": report["metric"],
        "higher_is_better": report["higher_is_better"],
        "k": len(shots),
        "max_new_tokens": max_new,
        "prompts": eval_prompts,
        "references": references,
        "zero_shot": zero,
        "few_shot": few,
        "metrics": report["baseline"],
        "flags": report["flags"],
        # How long each took: the evaluation of the fine-tune is about the zero-shot's time again.
        "seconds": {"zero_shot": zero_seconds, "few_shot": few_seconds},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(saved, ensure_ascii=False))
    tmp.replace(path)  # atomic: a resumed job never reads half a file
    summary = {
        "task": report["task"],
        "metric": report["metric"],
        "n": report["n"],
        "k": len(shots),
        "zero_shot": report["baseline"]["zero_shot"],
        "few_shot": report["baseline"]["few_shot"],
    }
    ctx.record(baseline=summary, task=report["task"], metric=report["metric"])
    primary = report["metric"]

    def value(name: str) -> str:  # the metric, with the share of well-formed answers beside it
        metrics = report["baseline"][name]
        note = evaluate.format_note(report, metrics)
        shown = evaluate.format_metric(primary, metrics.get(primary))
        return f"{shown} ({note})" if note else shown

    ctx.emit(
        "baseline",
        f"Baseline on {report['n']} eval examples ({report['task']} task, metric {primary}): "
        f"zero-shot {value('zero_shot')}, few-shot with {len(shots)} examples {value('few_shot')}.",
        data=summary,
    )
    if ctx.job.state is JobState.BASELINE:
        ctx.advance(JobState.TRAINING, "Baseline measured. Fine-tuning now.")
    return saved


# --------------------------------------------------------------------------- step 4: evaluation


def finish_evaluation(
    ctx: JobContext,
    base: Mapping[str, Any],
    tuned: Sequence[str],
    *,
    model: ModelRecord,
    metric: str | None,
    seed: int,
) -> Job:
    """Score the fine-tuned answers against the saved baseline and finish the job, for any
    backend: the report (``report.json``, the ``evals`` table, an ``evaluation`` event, the chart,
    one alert per flag), the predictions file (``prompt``, ``reference``, ``zero_shot``,
    ``few_shot``, ``finetuned`` per line), a readable ``report.md`` (:func:`evaluate.render_markdown`,
    linking ``loss.png`` and ``eval.png`` when they exist) next to them, ``model`` registered with
    the verdict (always, promoted or not), the promotion rule, and the job ``succeeded`` with
    ``model_id = model.id``.

    The promotion rule is :func:`evaluate.promotion_decision`: a fine-tune is promoted only when
    its verdict is not ``worse`` and it has learned something (valid answers, not all empty, not
    one answer to everything, better than the constant answer). A refused model's ``promotion``
    alert says why in plain words and how to try it anyway. A promoted model
    (:meth:`Store.promote`) becomes the channel's current model unless a user's choice of a model
    or of the base model stands (``/finetune use``); then it is only recorded as the channel's
    latest promoted model, and the ``promotion`` alert says who chose what, when, and how to
    switch. The job's result records ``promoted`` (it became current), ``promotion`` (the
    message), ``promotion_reasons`` (why the rule refused it; empty when it passed),
    ``kept_choice`` (the user's choice that stood, or None) and ``report_md`` (the page's path);
    ``report.json`` holds the same under ``promotion``."""

    job = ctx.job
    references = list(base["references"])
    texts = [prompts.prompt_text(p) for p in base["prompts"]]
    report = evaluate.build_report(
        references,
        {"zero_shot": base["zero_shot"], "few_shot": base["few_shot"], "finetuned": list(tuned)},
        task=base["task"],
        metric=metric,
        prompts=texts,
        seed=seed,
    )
    report["k"] = base["k"]
    report["max_new_tokens"] = base["max_new_tokens"]
    report["eval_split"] = dict(job.result.get("eval_split") or {})
    report["text"] = evaluate.render_text(report)
    eligible, reasons = evaluate.promotion_decision(report)
    report["promotion"] = {"eligible": eligible, "reasons": reasons}

    predictions = ctx.dir / "predictions.jsonl"
    with open(predictions, "w", encoding="utf-8") as out:
        for i, reference in enumerate(references):
            line = {
                "prompt": texts[i],
                "reference": reference,
                "zero_shot": base["zero_shot"][i],
                "few_shot": base["few_shot"][i],
                "finetuned": tuned[i],
                "messages": base["prompts"][i],
            }
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    report_json = ctx.dir / "report.json"
    _write_text(report_json, json.dumps(report, ensure_ascii=False, indent=1))
    ctx.store.save_eval(job.id, report)
    ctx.emit(
        "evaluation", report.get("summary", ""), data={k: v for k, v in report.items() if k != "per_example"}
    )
    with contextlib.suppress(Exception):  # a chart is a nicety; never fail an evaluated job for it
        chart = charts.eval_chart(report, ctx.dir / "eval.png")
        ctx.emit("artifact", "Evaluation chart.", data={"kind": "eval_chart", "path": str(chart)})
    for flag in report.get("flags") or []:
        ctx.alert(str(flag.get("code", "flag")), str(flag.get("message", "")))

    verdict = report.get("verdict")
    with contextlib.suppress(FtbotError):  # a resumed evaluation registered it already
        ctx.store.add_model(replace(model, verdict=verdict, metrics=report.get("finetuned") or {}))
    promoted, promotion, kept = _promote(ctx, job, model.id, verdict, eligible, reasons)
    report["promotion"] = {
        "eligible": eligible,
        "reasons": reasons,
        "promoted": promoted,
        "message": promotion,
        "kept_choice": kept,
        "model_id": model.id,
    }
    report_md = _write_report_files(ctx, job, report)
    ctx.alert("promotion", promotion, promoted=promoted, model_id=model.id, kept_choice=kept, reasons=reasons)
    result = {
        "task": report["task"],
        "metric": report["metric"],
        "baseline": report["baseline"],
        "finetuned": report["finetuned"],
        "verdict": verdict,
        "predictions": str(predictions),
        "report_path": str(report_json),
        "report_md": str(report_md) if report_md else None,
        "promoted": promoted,
        "promotion": promotion,
        "promotion_reasons": reasons,
        "kept_choice": kept,
        "summary": report.get("summary"),
    }
    return ctx.advance(JobState.SUCCEEDED, report.get("summary") or "Done.", model_id=model.id, result=result)


def _promote(
    ctx: JobContext, job: Job, model_id: str, verdict: str | None, eligible: bool, reasons: Sequence[str]
) -> tuple[bool, str, dict[str, Any] | None]:
    """The promotion rule's outcome for a registered fine-tune (:func:`finish_evaluation`):
    whether it became the channel's current model, the promotion alert's message, and the
    user's choice that stood instead (None when none did)."""
    if not eligible:
        return False, refused_promotion_message(model_id, reasons), None
    choice = ctx.store.promote(job.team, job.channel, model_id)
    ctx.store.audit(
        PROMOTION_RULE,
        "model.promote",
        model_id,
        {
            "team": job.team,
            "channel": job.channel,
            "verdict": verdict,
            "became_current": choice.model_id == model_id,
            "job": job.id,
        },
    )
    if choice.model_id == model_id:
        return (
            True,
            f"The fine-tuned model {model_id} is now this channel's default model (verdict: {verdict}).",
            None,
        )
    kept = {
        "mode": choice.mode,
        "model_id": choice.model_id,
        "set_by": choice.set_by,
        "set_at": choice.set_at.isoformat() if choice.set_at else None,
    }
    return False, held_promotion_message(model_id, verdict, choice), kept


#: The charts report.md links when they are in the run directory (file name -> caption).
REPORT_CHARTS = {
    "loss.png": "Training loss, eval loss and learning rate by optimizer step",
    "eval.png": "The models side by side on the task's metric",
}


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _write_report_files(ctx: JobContext, job: Job, report: Mapping[str, Any]) -> Path | None:
    """``report.json`` again, now with the promotion's outcome, and ``report.md``. Returns the
    page's path; None when it could not be written (a report page never fails an evaluated job:
    the verdict is already in report.json, the store and the thread)."""
    _write_text(ctx.dir / "report.json", json.dumps(report, ensure_ascii=False, indent=1))
    dataset_name = None
    with contextlib.suppress(FtbotError):
        dataset_name = ctx.store.get_dataset(job.dataset_hash).name
    try:
        page = evaluate.render_markdown(
            report,
            job_id=job.id,
            base_model=job.base_model,
            dataset=dataset_name,
            promotion=report.get("promotion"),
            charts={name: caption for name, caption in REPORT_CHARTS.items() if (ctx.dir / name).is_file()},
        )
        path = ctx.dir / "report.md"
        _write_text(path, page)
    except (OSError, KeyError, TypeError, ValueError) as exc:
        ctx.emit("log", f"Could not write report.md: {exc}")
        return None
    return path


def refused_promotion_message(model_id: str, reasons: Sequence[str]) -> str:
    """The promotion alert when the promotion rule refused ``model_id``: why, in plain words, and
    how to try it anyway."""
    why = "; ".join(reasons) if reasons else "it did not pass the promotion rule"
    return (
        f"The fine-tuned model {model_id} was NOT made this channel's default: {why}. "
        f"You can still try it with model={model_id}."
    )


def _who(user: str) -> str:
    """A user for messages: a Slack user id as a mention (Slack renders ``<@U…>`` as the name;
    the console as ``@U…``), any other name (the console's, the command line's) as it is."""
    if re.fullmatch(r"[UW][A-Z0-9]{2,}", user or ""):
        return f"<@{user}>"
    return user or "someone"


def held_promotion_message(model_id: str, verdict: str | None, choice: DefaultChoice) -> str:
    """The promotion alert when a user's choice kept ``model_id`` from becoming current."""
    what = f"model {choice.model_id}" if choice.model_id else "the base model"
    when = f" on {choice.set_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if choice.set_at else ""
    return (
        f"The fine-tuned model {model_id} passed the promotion rule (verdict: {verdict}) but was NOT "
        f"made this channel's current model, because {_who(choice.set_by)} chose {what}{when}, and "
        f"a user's choice stands until someone changes it. To switch to it: `/finetune use {model_id}` "
        f"(`ftbot models --use {model_id}` on the command line); `/finetune use auto` goes back to the "
        f"promotion rule (this model becomes current, and later promotions replace it). Meanwhile ask "
        f"it with model={model_id}."
    )
