"""Training progress: the ``TrainerCallback`` that turns the trainer's logs into ``step`` /
``eval`` / ``alert`` / ``log`` events on a job's sink, reports the measured pace against the
pre-flight after the first steps, and stops training when ``should_stop()`` says so (cancel).

Alerts: ``loss_nan`` (stops training: it has diverged), ``loss_exploding`` (loss above
EXPLODING_FACTOR times its lowest value so far and above where it started), ``overfitting`` (eval
loss rose at two evaluations in a row). Each alert is sent once.

transformers is imported inside :func:`make_progress_callback` (the callback class is made
there) and torch inside the step hook, so importing this module is cheap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from engine.progress import ProgressEvent, ProgressSink, utcnow
from engine.progress import format_duration as _duration

__all__ = [
    "CALIBRATE_MIN_STEPS",
    "CALIBRATE_SHARE",
    "EXPLODING_FACTOR",
    "Emitter",
    "ProgressRules",
    "make_progress_callback",
]

#: Alert threshold: loss above this many times the lowest loss so far *and* above the first loss.
EXPLODING_FACTOR = 2.0


class Emitter:
    """Builds events for one job and sends them to the sink."""

    def __init__(self, job_id: str, sink: ProgressSink) -> None:
        self.job_id = job_id
        self.sink = sink

    def __call__(self, kind: str, message: str = "", **fields_: Any) -> None:
        self.sink.emit(ProgressEvent(job_id=self.job_id, kind=kind, message=message, at=utcnow(), **fields_))


#: The measured pace is reported once this share of the steps (at least CALIBRATE_MIN_STEPS) is done.
CALIBRATE_SHARE = 0.05
CALIBRATE_MIN_STEPS = 3


class ProgressRules:
    """Trainer logs -> step / eval / alert events; should_stop() -> stop after this step. The
    hooks of a ``transformers.TrainerCallback`` (:func:`make_progress_callback` mixes them into one).

    Alerts: ``loss_nan`` (stops training: it has diverged), ``loss_exploding`` (loss above twice
    its lowest value so far and above where it started), ``overfitting`` (eval loss rose at two
    evaluations in a row). Each alert is sent once.
    """

    def __init__(
        self, emit: Emitter, should_stop: Callable[[], bool], preflight_seconds: float | None = None
    ) -> None:
        self.emit = emit
        self.should_stop = should_stop
        self.preflight_seconds = preflight_seconds
        self.calibrated = False
        self.cancelled = False
        self.diverged: str | None = None
        self._alerted: set[str] = set()
        self._losses: list[float] = []
        self._eval_losses: list[float] = []
        self._t0 = self._last_t = time.monotonic()
        self._step0 = 0
        self._last_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self._t0 = self._last_t = time.monotonic()
        self._step0 = state.global_step  # > 0 when resuming: the ETA counts this run's pace only
        self._last_tokens = state.num_input_tokens_seen or 0

    def _check_stop(self, control: Any) -> None:
        if not self.cancelled and self.should_stop():
            self.cancelled = True
            control.should_training_stop = True

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self._check_stop(control)

    def on_substep_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self._check_stop(control)

    def on_epoch_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        if self.cancelled or self.diverged:  # no evaluation or checkpoint for a stopped run
            control.should_evaluate = False
            control.should_save = False

    def _alert(self, code: str, message: str, state: Any) -> None:
        if code not in self._alerted:
            self._alerted.add(code)
            self.emit("alert", message, step=state.global_step, epoch=state.epoch, data={"code": code})

    def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
        if not state.is_world_process_zero or not logs:
            return
        if "eval_loss" in logs:
            self._on_eval(float(logs["eval_loss"]), state)
        if "loss" in logs:
            self._on_step(logs, state, control)

    def _on_step(self, logs: Mapping[str, Any], state: Any, control: Any) -> None:
        now = time.monotonic()
        loss = float(logs["loss"])
        step, total = state.global_step, state.max_steps
        tokens = state.num_input_tokens_seen or 0
        window = max(now - self._last_t, 1e-9)
        elapsed = now - self._t0
        done = step - self._step0
        metrics: dict[str, float] = {
            "loss": loss,
            "learning_rate": float(logs.get("learning_rate", 0.0)),
            "tokens_per_second": (tokens - self._last_tokens) / window,  # non-padding tokens
            "tokens_seen": float(tokens),
            "elapsed_seconds": elapsed,
        }
        if done > 0:  # the pace of this run (a resumed run counts from where it resumed)
            metrics["eta_seconds"] = (total - step) * elapsed / done
        if done > 0 and not self.calibrated and done >= max(CALIBRATE_MIN_STEPS, CALIBRATE_SHARE * total):
            self.calibrated = True
            self._calibrate(elapsed, done, total - step, state)
        if "grad_norm" in logs and logs["grad_norm"] is not None:
            metrics["grad_norm"] = float(logs["grad_norm"])
        import torch  # lazy: keeps torch out of `import engine` (loaded by the trainer already)

        if torch.cuda.is_available():
            metrics["gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
        self._last_t, self._last_tokens = now, tokens
        self.emit(
            "step",
            f"step {step}/{total} · loss {loss:.4f} · lr {metrics['learning_rate']:.2e}",
            step=step,
            total=total,
            epoch=state.epoch,
            metrics=metrics,
        )
        if not math.isfinite(loss):
            self.diverged = f"The training loss became {loss} at step {step}: training diverged."
            self._alert("loss_nan", self.diverged, state)
            control.should_training_stop = True
            return
        if len(self._losses) >= 3 and loss > EXPLODING_FACTOR * min(self._losses) and loss > self._losses[0]:
            self._alert(
                "loss_exploding",
                f"The training loss jumped to {loss:.3f} at step {step} (lowest so far "
                f"{min(self._losses):.3f}): the learning rate may be too high.",
                state,
            )
        self._losses.append(loss)

    def _calibrate(self, elapsed: float, done: int, left: int, state: Any) -> None:
        """The pre-flight time checked against the first steps' real pace (one ``log`` event)."""
        pace = elapsed / done
        total_s = elapsed + left * pace
        said = (
            f" (the pre-flight estimate was {_duration(self.preflight_seconds)})"
            if self.preflight_seconds
            else ""
        )
        self.emit(
            "log",
            f"Measured pace: {pace:.1f} s per step over the first {done} steps, so training should take "
            f"about {_duration(total_s)} in all{said}.",
            step=state.global_step,
            total=state.max_steps,
            data={
                "kind": "calibration",
                "notify": True,  # worth a line in the job's thread
                "seconds_per_step": pace,
                "calibrated_seconds": total_s,
                "preflight_seconds": self.preflight_seconds,
            },
        )

    def _on_eval(self, eval_loss: float, state: Any) -> None:
        self._eval_losses.append(eval_loss)
        self.emit(
            "eval",
            f"eval loss {eval_loss:.4f} after epoch {state.epoch:g}",
            step=state.global_step,
            total=state.max_steps,
            epoch=state.epoch,
            metrics={"eval_loss": eval_loss},
        )
        last = self._eval_losses[-3:]
        if len(last) == 3 and last[0] < last[1] < last[2]:
            self._alert(
                "overfitting",
                "The eval loss rose at two evaluations in a row ("
                + " → ".join(f"{x:.3f}" for x in last)
                + "): the model is probably overfitting. Fewer epochs or more varied examples may help.",
                state,
            )


def make_progress_callback(
    emit: Emitter, should_stop: Callable[[], bool], *, preflight_seconds: float | None = None
) -> Any:
    """A ``transformers.TrainerCallback`` with the :class:`ProgressRules` hooks (the class is made
    here: transformers is imported inside functions only)."""
    from transformers import TrainerCallback

    class ProgressCallback(ProgressRules, TrainerCallback):
        pass

    return ProgressCallback(emit, should_stop, preflight_seconds)
