"""Training configuration: defaults from the guide, and ``key=value`` options parsed into it. Pure.

:class:`TrainConfig` is the one validated description of how a job trains. It is stored in the job
(``to_dict()`` / ``from_dict()``) so a job records exactly what it ran with, and every backend reads
its settings from here.

Defaults (the seed guide's QLoRA recipe): lr 2e-4, LoRA r 16, alpha 32 (2 x r when r is changed and
alpha is not), dropout 0.05, LoRA on q/k/v/o_proj (``target=all-linear`` for every linear layer),
per-device batch 4, gradient accumulation 4 (effective batch 16), 3 epochs, cosine schedule with 10%
warm-up, loss on assistant tokens only, seed 0. Decided when the job runs (and recorded in the
result): the optimizer (``paged_adamw_8bit`` on CUDA, ``adamw_torch`` on the CPU), the precision
(bf16 where the hardware supports it), gradient checkpointing (off on the CPU and for tiny models),
and ``max_length`` when not given (from the token lengths of the training examples).

Options come from Slack and the CLI as strings (``/finetune lr=1e-4 epochs=2``).
:func:`parse_options` accepts aliases (``lr``, ``epochs``, ``r``/``lora_r``, ...) and raises one
:class:`~engine.errors.ConfigError` that lists *every* problem with the accepted range, and for an
unknown key the accepted keys, before any work starts.

The ``builtin:tiny`` demo: a randomly initialised tiny model barely moves at lr 2e-4 in 3 epochs.
When the base model is ``builtin:tiny`` and the user set neither ``lr`` nor ``epochs``,
:func:`apply_base_model_defaults` uses lr 5e-3 and 6 epochs instead and records a note saying so
(``config.notes``); the note travels to the job's events. Real base models always get the guide's
values.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from engine.errors import ConfigError
from engine.evaluate import PER_EXAMPLE_METRICS, TASKS
from engine.settings import BUILTIN_TINY

ATTENTION_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
ALL_LINEAR = "all-linear"

# metric= names a task (its primary metric) or one per-example metric; engine.evaluate owns the list.
METRICS: tuple[str, ...] = TASKS + tuple(sorted({m for names in PER_EXAMPLE_METRICS.values() for m in names}))
REPORTS = ("none", "wandb", "tensorboard")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
OPTIMIZERS = ("auto", "adamw_torch", "paged_adamw_8bit", "paged_adamw_32bit", "adamw_8bit")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
LOSSES = ("assistant", "all")
TOGGLES = ("auto", "on", "off")
QUANTIZE = ("auto", "on", "off")
RECIPES = ("auto", "guide")
BACKENDS = ("local", "openai")

# builtin:tiny demo settings (see module docstring). Measured on the CI CPU: 200 examples, 6 epochs
# at 5e-3 learned a price task's output format in about 18 s.
DEMO_LEARNING_RATE = 5e-3
DEMO_EPOCHS = 6
DEMO_NOTE_PREFIX = "builtin:tiny demo:"


def demo_note(changed: Mapping[str, Any]) -> str:
    """The note that says which demo settings a builtin:tiny run got (only those it got)."""
    parts = []
    if "learning_rate" in changed:
        parts.append(f"lr {DEMO_LEARNING_RATE:g}")
    if "epochs" in changed:
        parts.append(f"{DEMO_EPOCHS} epochs")
    return (
        f"{DEMO_NOTE_PREFIX} a randomly initialised tiny model barely learns at the guide's lr 2e-4, so "
        f"this run uses {' and '.join(parts)}. Real base models use lr 2e-4 and 3 epochs unless you set "
        "lr= or epochs=."
    )


DEMO_NOTE = demo_note({"learning_rate": DEMO_LEARNING_RATE, "epochs": DEMO_EPOCHS})

Auto = str  # the literal "auto" for OpenAI hyperparameters


@dataclass(frozen=True)
class TrainConfig:
    """A validated training configuration. Construct it directly (raises ConfigError on bad values),
    from user options with :func:`parse_options`, or from a stored job with :meth:`from_dict`.

    ``lora_alpha=None`` means 2 x ``lora_r``; it is resolved on construction, so the stored value is
    always a number. ``user_set`` names the fields the user chose explicitly (the demo adjustment
    never overrides those). ``notes`` are plain sentences about decisions made for the user.
    """

    backend: str = "local"
    base_model: str | None = None  # None: the service's default (FTBOT_BASE_MODEL)
    # Optimisation (local backend).
    learning_rate: float = 2e-4
    epochs: int = 3
    batch_size: int = 4  # per device
    grad_accum: int = 4
    scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    optimizer: str = "auto"  # auto: paged_adamw_8bit on CUDA, adamw_torch on the CPU
    precision: str = "auto"  # auto: bf16 where supported, else fp32
    gradient_checkpointing: str = "auto"  # auto: off on the CPU and small models; on a GPU when needed to fit
    max_length: int | None = None  # None: from the training examples' token lengths
    loss: str = "assistant"  # assistant: loss on assistant tokens only; all: every token
    quantize: str = "auto"  # auto: 4-bit NF4 on a GPU (engine/recipe.py); on: 4-bit wherever bitsandbytes can; off: no
    recipe: str = "auto"  # auto: engine/recipe.py adapts the guide's values to the model, data and device; guide: as is
    # LoRA.
    lora_r: int = 16
    lora_alpha: float | None = None
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ATTENTION_MODULES  # or (ALL_LINEAR,)
    lora_layers: str = "auto"  # auto: engine/recipe.py decides; all; or "N": the upper N layers
    # Everything.
    seed: int = 0
    eval_fraction: float = 0.1
    metric: str | None = None  # None: detected from the answers; else a task or a metric (METRICS)
    report: str = "none"
    # OpenAI hyperparameters: a number or "auto" (OpenAI chooses).
    n_epochs: int | Auto = "auto"
    openai_batch_size: int | Auto = "auto"
    learning_rate_multiplier: float | Auto = "auto"
    # Bookkeeping.
    user_set: frozenset[str] = field(default_factory=frozenset)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Normalise containers so equality and hashing behave after from_dict (lists from JSON).
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        object.__setattr__(self, "user_set", frozenset(self.user_set))
        object.__setattr__(self, "notes", tuple(self.notes))
        if self.lora_alpha is None and isinstance(self.lora_r, int) and not isinstance(self.lora_r, bool):
            object.__setattr__(self, "lora_alpha", 2 * self.lora_r)
        if isinstance(self.lora_alpha, float) and self.lora_alpha.is_integer():
            object.__setattr__(self, "lora_alpha", int(self.lora_alpha))  # "alpha=32" reads as 32, not 32.0
        problems = _check(self)
        if problems:
            raise ConfigError(
                problems, hint=_accepted_hint(self.backend if self.backend in BACKENDS else "local")
            )

    # -- derived values -------------------------------------------------------------------------
    @property
    def effective_batch_size(self) -> int:
        """Examples per optimizer step on one device (batch x accumulation)."""
        return self.batch_size * self.grad_accum

    @property
    def target(self) -> str | list[str]:
        """``target_modules`` in the form peft's LoraConfig takes."""
        return ALL_LINEAR if self.target_modules == (ALL_LINEAR,) else list(self.target_modules)

    def resolve_optimizer(self, *, cuda: bool) -> str:
        """The optimizer name for transformers' ``optim=``: paged 8-bit AdamW on CUDA (QLoRA's OOM
        guard), plain AdamW on the CPU (bitsandbytes' paged and 8-bit optimizers need CUDA, so a
        user's choice of one of those also becomes adamw_torch there)."""
        if not cuda:
            return "adamw_torch"
        return "paged_adamw_8bit" if self.optimizer == "auto" else self.optimizer

    # -- storage ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples and sets become sorted lists)."""
        out = asdict(self)
        out["target_modules"] = list(self.target_modules)
        out["user_set"] = sorted(self.user_set)
        out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TrainConfig:
        """Rebuild a config stored with :meth:`to_dict`. Missing keys take the defaults; unknown keys
        are a ConfigError (a stored config that this version cannot read must not be half-applied)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError([(key, "not a TrainConfig field") for key in unknown])
        return cls(**dict(raw))


# -- options table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Option:
    field: str
    names: tuple[str, ...]  # the first is the canonical key shown to users
    kind: str  # float | int | choice | target | str | auto_int | auto_float
    accepted: str  # the accepted range, in words
    backends: tuple[str, ...] = ("local",)
    choices: tuple[str, ...] = ()


_OPTIONS: tuple[_Option, ...] = (
    _Option(
        "base_model",
        ("base_model", "base", "model"),
        "str",
        "one of the allowed base models (FTBOT_BASE_MODELS; admins may name any Hugging Face id or local "
        "model directory), builtin:smollm2 or builtin:tiny",
        BACKENDS,
    ),
    _Option("backend", ("backend",), "choice", "local or openai", BACKENDS, BACKENDS),
    _Option("learning_rate", ("lr", "learning_rate"), "float", "a number from 1e-7 to 0.01 (default 2e-4)"),
    _Option(
        "epochs",
        ("epochs", "num_epochs", "num_train_epochs"),
        "int",
        "a whole number from 1 to 50 (default 3)",
    ),
    _Option(
        "batch_size",
        ("batch", "batch_size", "per_device_batch_size"),
        "int",
        "a whole number from 1 to 256 (default 4)",
    ),
    _Option(
        "grad_accum",
        ("accum", "grad_accum", "gradient_accumulation", "gradient_accumulation_steps"),
        "int",
        "a whole number from 1 to 1024 (default 4)",
    ),
    _Option(
        "scheduler",
        ("scheduler", "lr_scheduler", "schedule"),
        "choice",
        "one of " + ", ".join(SCHEDULERS),
        choices=SCHEDULERS,
    ),
    _Option(
        "warmup_ratio",
        ("warmup", "warmup_ratio"),
        "float",
        "a fraction of the steps from 0 to 0.5 (default 0.1)",
    ),
    _Option(
        "optimizer", ("optimizer", "optim"), "choice", "one of " + ", ".join(OPTIMIZERS), choices=OPTIMIZERS
    ),
    _Option(
        "precision", ("precision", "dtype"), "choice", "one of " + ", ".join(PRECISIONS), choices=PRECISIONS
    ),
    _Option(
        "gradient_checkpointing",
        ("checkpointing", "gradient_checkpointing"),
        "choice",
        "auto, on or off",
        choices=TOGGLES,
    ),
    _Option(
        "max_length",
        ("max_length", "max_len", "max_seq_length"),
        "int",
        "a whole number of tokens from 16 to 131072 (default: from the data)",
    ),
    _Option("loss", ("loss",), "choice", "assistant (loss on the answers only) or all", choices=LOSSES),
    _Option(
        "quantize",
        ("quantize", "4bit", "qlora"),
        "choice",
        "auto (4-bit QLoRA on a GPU; full precision on a CPU, where it is faster), on (4-bit wherever "
        "possible) or off (LoRA on 16/32-bit weights: faster, more memory)",
        choices=QUANTIZE,
    ),
    _Option(
        "recipe",
        ("recipe",),
        "choice",
        "auto (the guide's QLoRA values adapted to the model's size, the amount of data and the device, "
        "with early stopping) or guide (the guide's values exactly)",
        choices=RECIPES,
    ),
    _Option("lora_r", ("r", "lora_r", "rank"), "int", "a whole number from 1 to 256 (default 16)"),
    _Option("lora_alpha", ("alpha", "lora_alpha"), "float", "a number from 1 to 1024 (default 2 x r)"),
    _Option("lora_dropout", ("dropout", "lora_dropout"), "float", "a number from 0 to 0.5 (default 0.05)"),
    _Option(
        "target_modules",
        ("target", "target_modules"),
        "target",
        "attention (q/k/v/o_proj), all-linear, or a comma list of module names",
    ),
    _Option(
        "lora_layers",
        ("layers", "lora_layers"),
        "layers",
        "auto (every layer on a GPU, the upper third on a CPU), all, or a number N (the upper N layers)",
    ),
    _Option("seed", ("seed",), "int", "a whole number from 0 to 4294967295 (default 0)", BACKENDS),
    _Option(
        "eval_fraction",
        ("eval_fraction", "eval_split", "holdout"),
        "float",
        "a fraction above 0 and at most 0.5 (default 0.1)",
        BACKENDS,
    ),
    _Option(
        "metric",
        ("metric", "task"),
        "choice",
        "auto, a task (numeric, json, label, text) or a metric (" + ", ".join(METRICS[len(TASKS) :]) + ")",
        BACKENDS,
    ),
    _Option("report", ("report", "report_to"), "choice", "one of " + ", ".join(REPORTS), choices=REPORTS),
    # OpenAI hyperparameters.
    _Option(
        "n_epochs", ("epochs", "n_epochs"), "auto_int", "auto or a whole number from 1 to 50", ("openai",)
    ),
    _Option(
        "openai_batch_size",
        ("batch", "batch_size"),
        "auto_int",
        "auto or a whole number from 1 to 256",
        ("openai",),
    ),
    _Option(
        "learning_rate_multiplier",
        ("lr_multiplier", "learning_rate_multiplier"),
        "auto_float",
        "auto or a number above 0 and at most 10",
        ("openai",),
    ),
)


def accepted_keys(backend: str = "local") -> list[str]:
    """The canonical option keys a backend accepts, in table order."""
    return [opt.names[0] for opt in _OPTIONS if backend in opt.backends]


def option_help(backend: str = "local") -> list[tuple[str, str]]:
    """``(key, accepted values)`` pairs for help texts (``/finetune help``)."""
    return [(opt.names[0], opt.accepted) for opt in _OPTIONS if backend in opt.backends]


def _accepted_hint(backend: str) -> str:
    return f"Accepted keys for the {backend} backend: " + ", ".join(accepted_keys(backend)) + "."


def _lookup(backend: str) -> dict[str, _Option]:
    table: dict[str, _Option] = {}
    for opt in _OPTIONS:
        if backend in opt.backends:
            for name in opt.names:
                table[name] = opt
    return table


def _other_backend_keys(backend: str) -> set[str]:
    own = set(_lookup(backend))
    return {name for opt in _OPTIONS for name in opt.names} - own


_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def _convert(opt: _Option, raw: str) -> tuple[Any, str | None]:
    """Turn one option string into a typed value, or return an error message."""
    text = raw.strip()
    if opt.kind == "str":
        return (text, None) if text else (None, f"needs a value: {opt.accepted}")
    if opt.kind in ("auto_int", "auto_float") and text.lower() == "auto":
        return "auto", None
    if opt.kind in ("float", "auto_float"):
        try:
            value = float(text)
        except ValueError:
            return None, f"{raw!r} is not a number; expected {opt.accepted}"
        if not math.isfinite(value):
            return None, f"{raw!r} is not a finite number; expected {opt.accepted}"
        return value, None
    if opt.kind in ("int", "auto_int"):
        try:
            number = float(text)
        except ValueError:
            return None, f"{raw!r} is not a whole number; expected {opt.accepted}"
        if not math.isfinite(number) or number != int(number):
            return None, f"{raw!r} is not a whole number; expected {opt.accepted}"
        return int(number), None
    if opt.kind == "choice":
        value = text.lower().replace("-", "_") if opt.field in ("scheduler", "optimizer") else text.lower()
        if opt.field == "metric":
            if value in ("", "auto"):
                return None, None
            value = value.replace("-", "_")
            if value not in METRICS:
                return None, f"{raw!r} is not accepted; expected {opt.accepted}"
            return value, None
        if opt.field in ("gradient_checkpointing", "quantize"):
            value = {"true": "on", "yes": "on", "1": "on", "false": "off", "no": "off", "0": "off"}.get(
                value, value
            )
        if value not in opt.choices:
            return None, f"{raw!r} is not accepted; expected {opt.accepted}"
        return value, None
    if opt.kind == "layers":
        value = text.lower()
        if value in ("auto", "all"):
            return value, None
        if value.isdigit() and int(value) >= 1:
            return str(int(value)), None
        return None, f"{raw!r} is not accepted; expected {opt.accepted}"
    if opt.kind == "target":
        value = text.lower()
        if value in ("attention", "attn", "qkvo", "default"):
            return ATTENTION_MODULES, None
        if value in (ALL_LINEAR, "all_linear", "all"):
            return (ALL_LINEAR,), None
        names = tuple(part.strip() for part in text.split(",") if part.strip())
        bad = [name for name in names if not _MODULE_NAME.match(name)]
        if not names or bad:
            return None, f"{raw!r} is not accepted; expected {opt.accepted}"
        return names, None
    raise AssertionError(f"unknown option kind {opt.kind}")  # pragma: no cover - table bug


def parse_options(
    options: Mapping[str, str], *, backend: str = "local", base_model: str | None = None
) -> TrainConfig:
    """Parse user options (``{"lr": "1e-4", "epochs": "2"}``) into a validated :class:`TrainConfig`.

    Keys are case-insensitive and accept the aliases in the options table (``lr``/``learning_rate``,
    ``r``/``lora_r``, ``batch``, ``accum``, ...). ``backend=`` in the options overrides the argument.
    The base model (option ``base=`` or the ``base_model`` argument, the option winning) decides the
    builtin:tiny demo adjustment (:func:`apply_base_model_defaults`).

    Raises:
        ConfigError: listing every problem at once (unknown keys with the accepted keys, values that
            do not parse, values out of range with the accepted range, an option given twice
            through two aliases). Nothing has been started when it is raised.
    """
    problems: list[tuple[str, str]] = []
    lowered = {str(k).strip().lower().replace("-", "_"): str(v) for k, v in options.items()}
    raw_backend = lowered.pop("backend", None)
    if raw_backend is not None:
        backend = raw_backend.strip().lower()
    if backend not in BACKENDS:
        raise ConfigError([("backend", f"{backend!r} is not accepted; expected local or openai")])
    table = _lookup(backend)
    others = _other_backend_keys(backend)

    values: dict[str, Any] = {"backend": backend}
    given_as: dict[str, str] = {}
    for key, raw in lowered.items():
        opt = table.get(key)
        if opt is None:
            if key in others:
                extra = (
                    " (use lr_multiplier=)" if backend == "openai" and key in ("lr", "learning_rate") else ""
                )
                problems.append((key, f"is not an option of the {backend} backend{extra}"))
            else:
                problems.append((key, "unknown option" + _did_you_mean(key, table)))
            continue
        if opt.field in given_as:
            problems.append((key, f"given twice (also as {given_as[opt.field]}=)"))
            continue
        given_as[opt.field] = key
        value, error = _convert(opt, raw)
        if error:
            problems.append((key, error))
            continue
        values[opt.field] = value

    user_set = frozenset(given_as)
    if not problems:
        try:
            config = TrainConfig(**values, user_set=user_set)
        except ConfigError as err:
            problems.extend((_display_key(field_name, given_as), msg) for field_name, msg in err.problems)
        else:
            return apply_base_model_defaults(config, values.get("base_model") or base_model)
    else:
        # Range-check the values that did convert, so the user sees every problem in one reply.
        problems.extend(
            (_display_key(field_name, given_as), msg)
            for field_name, msg in _check_values(values)
            if field_name in values
        )
    raise ConfigError(problems, hint=_accepted_hint(backend))


def _did_you_mean(key: str, table: Mapping[str, _Option]) -> str:
    """'; did you mean epochs=?' for a key close to one of ``table``'s (a typo), else ""."""
    close = difflib.get_close_matches(key[:64], list(table), n=1, cutoff=0.7)
    return f"; did you mean {close[0]}=?" if close else ""


def _display_key(field_name: str, given_as: Mapping[str, str]) -> str:
    if field_name in given_as:
        return given_as[field_name]
    for opt in _OPTIONS:
        if opt.field == field_name:
            return opt.names[0]
    return field_name


def apply_base_model_defaults(config: TrainConfig, base_model: str | None) -> TrainConfig:
    """Adjust defaults for a base model. Today only the builtin:tiny demo (module docstring): lr and
    epochs the user did not set become 5e-3 and 6, and a note says so. Idempotent."""
    already = any(note.startswith(DEMO_NOTE_PREFIX) for note in config.notes)
    if config.backend != "local" or base_model != BUILTIN_TINY or already:
        return config
    changes: dict[str, Any] = {}
    if "learning_rate" not in config.user_set:
        changes["learning_rate"] = DEMO_LEARNING_RATE
    if "epochs" not in config.user_set:
        changes["epochs"] = DEMO_EPOCHS
    if not changes:
        return config
    return replace(config, **changes, notes=(*config.notes, demo_note(changes)))


# -- validation ---------------------------------------------------------------------------------------


def _check(config: TrainConfig) -> list[tuple[str, str]]:
    return _check_values({f.name: getattr(config, f.name) for f in fields(config)})


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_values(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Range checks on typed values; each message states the accepted range."""
    problems: list[tuple[str, str]] = []

    def num(
        name: str, lo: float, hi: float, text: str, *, lo_open: bool = False, integer: bool = False
    ) -> None:
        if name not in v:
            return
        value = v[name]
        ok = (_is_int(value) if integer else _is_number(value)) and (
            (value > lo if lo_open else value >= lo) and value <= hi
        )
        if not ok:
            problems.append((name, f"{value!r} is out of range; expected {text}"))

    def choice(name: str, allowed: tuple[str, ...]) -> None:
        if name in v and v[name] not in allowed:
            problems.append((name, f"{v[name]!r} is not accepted; expected one of {', '.join(allowed)}"))

    choice("backend", BACKENDS)
    if (
        "base_model" in v
        and v["base_model"] is not None
        and (not isinstance(v["base_model"], str) or not v["base_model"].strip())
    ):
        problems.append(("base_model", "must be a Hugging Face id, a local directory or builtin:tiny"))
    num("learning_rate", 1e-7, 1e-2, "a number from 1e-7 to 0.01 (the guide's QLoRA default is 2e-4)")
    num("epochs", 1, 50, "a whole number from 1 to 50", integer=True)
    num("batch_size", 1, 256, "a whole number from 1 to 256", integer=True)
    num("grad_accum", 1, 1024, "a whole number from 1 to 1024", integer=True)
    choice("scheduler", SCHEDULERS)
    num("warmup_ratio", 0, 0.5, "a fraction of the steps from 0 to 0.5")
    choice("optimizer", OPTIMIZERS)
    choice("precision", PRECISIONS)
    choice("gradient_checkpointing", TOGGLES)
    if v.get("max_length") is not None:
        num("max_length", 16, 131072, "a whole number of tokens from 16 to 131072", integer=True)
    choice("loss", LOSSES)
    choice("quantize", QUANTIZE)
    choice("recipe", RECIPES)
    num("lora_r", 1, 256, "a whole number from 1 to 256", integer=True)
    if v.get("lora_alpha") is not None:
        num("lora_alpha", 1, 1024, "a number from 1 to 1024")
    num("lora_dropout", 0, 0.5, "a number from 0 to 0.5")
    if "target_modules" in v:
        mods = v["target_modules"]
        if (
            isinstance(mods, str)
            or not mods
            or not all(isinstance(m, str) and (m == ALL_LINEAR or _MODULE_NAME.match(m)) for m in mods)
            or (ALL_LINEAR in mods and len(mods) > 1)
        ):
            problems.append(("target_modules", "expected attention, all-linear, or a list of module names"))
    layers = v.get("lora_layers", "auto")
    if not (isinstance(layers, str) and (layers in ("auto", "all") or (layers.isdigit() and int(layers) >= 1))):
        problems.append(("lora_layers", "expected auto, all, or a whole number of upper layers"))
    num("seed", 0, 2**32 - 1, "a whole number from 0 to 4294967295", integer=True)
    num("eval_fraction", 0, 0.5, "a fraction above 0 and at most 0.5", lo_open=True)
    if v.get("metric") is not None:
        choice("metric", METRICS)
    choice("report", REPORTS)
    for name, lo, hi, text, integer in (
        ("n_epochs", 1, 50, "auto or a whole number from 1 to 50", True),
        ("openai_batch_size", 1, 256, "auto or a whole number from 1 to 256", True),
        ("learning_rate_multiplier", 0, 10, "auto or a number above 0 and at most 10", False),
    ):
        if name in v and v[name] != "auto":
            num(name, lo, hi, text, integer=integer, lo_open=not integer)
    return problems
