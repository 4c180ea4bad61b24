"""TrainConfig and option parsing: the guide's defaults, aliases, every problem reported at once."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.config import (
    ALL_LINEAR,
    ATTENTION_MODULES,
    DEMO_EPOCHS,
    DEMO_LEARNING_RATE,
    DEMO_NOTE,
    TrainConfig,
    accepted_keys,
    apply_base_model_defaults,
    demo_note,
    option_help,
    parse_options,
)
from engine.errors import ConfigError, UsageError


def test_defaults_are_the_guides_qlora_recipe() -> None:
    config = parse_options({})
    assert config.learning_rate == 2e-4
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (16, 32, 0.05)
    assert config.target_modules == ATTENTION_MODULES
    assert (config.batch_size, config.grad_accum, config.effective_batch_size) == (4, 4, 16)
    assert (config.epochs, config.scheduler, config.warmup_ratio) == (3, "cosine", 0.1)
    assert config.loss == "assistant"
    assert config.max_length is None and config.seed == 0 and config.eval_fraction == 0.1
    assert config.metric is None and config.report == "none"
    assert config.resolve_optimizer(cuda=True) == "paged_adamw_8bit"
    assert config.resolve_optimizer(cuda=False) == "adamw_torch"
    assert config.notes == () and config.user_set == frozenset()


def test_aliases_and_values_are_parsed() -> None:
    config = parse_options(
        {
            "lr": "1e-4",
            "epochs": "2",
            "lora_r": "8",
            "dropout": "0.1",
            "batch": "2",
            "accum": "8",
            "max_length": "512",
            "target": "all-linear",
            "seed": "7",
            "metric": "mae",
            "eval_fraction": "0.2",
            "Scheduler": "Linear",
        }
    )
    assert config.learning_rate == 1e-4 and config.epochs == 2
    assert config.lora_r == 8 and config.lora_alpha == 16  # alpha follows r when not given
    assert config.lora_dropout == 0.1 and (config.batch_size, config.grad_accum) == (2, 8)
    assert config.max_length == 512 and config.seed == 7 and config.eval_fraction == 0.2
    assert config.target_modules == (ALL_LINEAR,) and config.target == ALL_LINEAR
    assert config.metric == "mae"  # a metric name is kept; engine.evaluate maps it to its task
    assert config.scheduler == "linear"
    assert {"learning_rate", "epochs", "lora_r"} <= config.user_set


def test_alpha_given_explicitly_is_kept_and_integral() -> None:
    config = parse_options({"r": "8", "alpha": "8"})
    assert config.lora_alpha == 8 and isinstance(config.lora_alpha, int)
    assert parse_options({"target": "q_proj,v_proj"}).target == ["q_proj", "v_proj"]


def test_every_problem_is_reported_at_once_with_the_accepted_range() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_options({"lr": "abc", "r": "0", "epochs": "100", "colour": "red", "dropout": "0.9"})
    err = caught.value
    fields = {field for field, _ in err.problems}
    assert fields == {"lr", "r", "epochs", "colour", "dropout"}
    text = str(err)
    assert "'abc' is not a number" in text
    assert "from 1 to 256" in text  # r's accepted range
    assert "from 1 to 50" in text  # epochs' accepted range
    assert "unknown option" in text
    assert "Accepted keys for the local backend" in text and "lr" in err.hint and "epochs" in err.hint
    assert isinstance(err, UsageError)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"lr": "0"}, "lr"),
        ({"lr": "1"}, "lr"),
        ({"lr": "nan"}, "lr"),
        ({"batch": "2.5"}, "batch"),
        ({"accum": "0"}, "accum"),
        ({"max_length": "8"}, "max_length"),
        ({"target": "q_proj;drop table"}, "target"),
        ({"metric": "bleu"}, "metric"),
        ({"report": "mlflow"}, "report"),
        ({"eval_fraction": "0"}, "eval_fraction"),
        ({"seed": "-1"}, "seed"),
        ({"warmup": "0.9"}, "warmup"),
        ({"backend": "gpu"}, "backend"),
    ],
)
def test_bad_values_are_refused(options: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_options(options)
    assert [f for f, _ in caught.value.problems] == [field]


def test_metric_accepts_tasks_and_the_evaluators_metrics() -> None:
    assert parse_options({"metric": "JSON"}).metric == "json"
    assert parse_options({"metric": "within-10pct"}).metric == "within_10pct"
    assert parse_options({"metric": "auto"}).metric is None
    with pytest.raises(ConfigError, match="rouge_l"):  # the message lists what is accepted
        parse_options({"metric": "bleu"})


def test_quantize_and_checkpointing_toggles() -> None:
    assert parse_options({}).quantize == "auto"
    assert parse_options({"quantize": "off"}).quantize == "off"
    assert parse_options({"4bit": "yes"}).quantize == "on"  # "4-bit please", even on a CPU
    assert parse_options({"recipe": "guide"}).recipe == "guide"
    assert parse_options({"checkpointing": "true"}).gradient_checkpointing == "on"
    with pytest.raises(ConfigError, match="quantize"):
        parse_options({"quantize": "8bit"})


def test_two_aliases_of_one_option_are_refused() -> None:
    with pytest.raises(ConfigError, match="given twice"):
        parse_options({"lr": "1e-4", "learning_rate": "2e-4"})


def test_openai_backend_takes_its_own_hyperparameters() -> None:
    config = parse_options({"epochs": "auto", "batch": "8", "lr_multiplier": "2"}, backend="openai")
    assert (config.n_epochs, config.openai_batch_size, config.learning_rate_multiplier) == ("auto", 8, 2.0)
    assert config.backend == "openai"
    with pytest.raises(ConfigError) as caught:
        parse_options({"lr": "1e-4", "r": "8"}, backend="openai")
    assert {f for f, _ in caught.value.problems} == {"lr", "r"}
    assert "lr_multiplier" in str(caught.value)
    assert parse_options({"backend": "openai", "epochs": "3"}).n_epochs == 3
    assert "lr_multiplier" in accepted_keys("openai") and "lr" not in accepted_keys("openai")
    assert ("lr", "a number from 1e-7 to 0.01 (default 2e-4)") in option_help("local")


def test_builtin_tiny_demo_adjusts_only_what_the_user_did_not_set() -> None:
    demo = parse_options({}, base_model="builtin:tiny")
    assert (demo.learning_rate, demo.epochs) == (DEMO_LEARNING_RATE, DEMO_EPOCHS)
    assert demo.notes == (DEMO_NOTE,) and "builtin:tiny demo" in DEMO_NOTE and "lr 0.005" in DEMO_NOTE
    assert parse_options({"base": "builtin:tiny"}).learning_rate == DEMO_LEARNING_RATE
    own_lr = parse_options({"lr": "1e-3"}, base_model="builtin:tiny")
    assert (own_lr.learning_rate, own_lr.epochs) == (1e-3, DEMO_EPOCHS)
    assert own_lr.notes == (demo_note({"epochs": DEMO_EPOCHS}),)
    assert "6 epochs" in own_lr.notes[0] and "0.005" not in own_lr.notes[0]  # says only what it changed
    own_epochs = parse_options({"epochs": "2"}, base_model="builtin:tiny")
    assert (
        "lr 0.005" in own_epochs.notes[0]
        and "epochs" not in own_epochs.notes[0].split("uses")[1].split(".")[0]
    )
    both = parse_options({"lr": "1e-3", "epochs": "2"}, base_model="builtin:tiny")
    assert (both.learning_rate, both.epochs, both.notes) == (1e-3, 2, ())
    real = parse_options({}, base_model="Qwen/Qwen2.5-0.5B-Instruct")
    assert (real.learning_rate, real.epochs, real.notes) == (2e-4, 3, ())
    assert apply_base_model_defaults(demo, "builtin:tiny") == demo  # idempotent


def test_round_trip_through_json() -> None:
    config = parse_options(
        {"lr": "1e-4", "target": "all-linear", "metric": "json"}, base_model="builtin:tiny"
    )
    stored = json.loads(json.dumps(config.to_dict()))
    assert TrainConfig.from_dict(stored) == config
    assert TrainConfig.from_dict({}) == TrainConfig()
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"lr_typo": 1})


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ConfigError):
        TrainConfig(lora_r=0)
    with pytest.raises(ConfigError):
        TrainConfig(learning_rate=True)  # type: ignore[arg-type]


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=6))
def test_parse_never_fails_with_anything_but_config_error(options: dict[str, str]) -> None:
    try:
        config = parse_options(options)
    except ConfigError as err:
        assert err.problems
    else:
        assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("key", "suggestion", "backend"),
    [
        ("epoch", "epochs", "local"),
        ("epocs", "epochs", "local"),
        ("lerning_rate", "learning_rate", "local"),
        ("dropuot", "dropout", "local"),
        ("epoch", "epochs", "openai"),
        ("lr_multipler", "lr_multiplier", "openai"),
    ],
)
def test_an_unknown_option_close_to_a_known_one_gets_did_you_mean(
    key: str, suggestion: str, backend: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_options({key: "3"}, backend=backend)
    assert caught.value.problems == [(key, f"unknown option; did you mean {suggestion}=?")]
    assert f"{key}: unknown option; did you mean {suggestion}=?" in str(caught.value)


def test_an_unknown_option_like_no_known_one_gets_no_suggestion() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_options({"colour": "red"})
    assert caught.value.problems == [("colour", "unknown option")]
