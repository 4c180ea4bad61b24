"""The names of evaluation: tasks, verdicts, metrics and their direction, model labels, limits."""

from __future__ import annotations

TASKS = ("numeric", "json", "label", "text")
VERDICTS = ("improved", "no_significant_difference", "worse")

#: The primary metric of each task (ARCHITECTURE.md contract) and its direction.
PRIMARY_METRIC: dict[str, str] = {
    "numeric": "mae",
    "json": "field_accuracy",
    "label": "accuracy",
    "text": "token_f1",
}
LOWER_IS_BETTER = frozenset({"mae", "mae_parsed", "median_ae", "p90_ae", "max_ae", "mape"})

#: Metrics that are a mean of per-example scores, so they can be the verdict's metric (``metric=``).
PER_EXAMPLE_METRICS: dict[str, tuple[str, ...]] = {
    "numeric": ("mae", "within_10pct"),
    "json": ("field_accuracy", "exact_match", "valid_rate"),
    "label": ("accuracy",),
    "text": ("token_f1", "rouge_l", "exact_match"),
}
#: Every metric each task reports, in table order.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "numeric": ("mae", "median_ae", "p90_ae", "max_ae", "mape", "within_10pct", "parse_rate", "mae_parsed"),
    "json": ("field_accuracy", "exact_match", "valid_rate"),
    "label": ("accuracy", "macro_f1", "valid_rate"),
    "text": ("token_f1", "rouge_l", "exact_match"),
}
#: The "did it answer in the right shape" metric of each task (None: free text has no format).
FORMAT_METRIC: dict[str, str | None] = {
    "numeric": "parse_rate",
    "json": "valid_rate",
    "label": "valid_rate",
    "text": None,
}

METRIC_NAMES: dict[str, str] = {
    "mae": "average error",
    "mae_parsed": "average error (numeric answers only)",
    "median_ae": "median error",
    "p90_ae": "90th percentile error",
    "max_ae": "worst error",
    "mape": "average % error",
    "within_10pct": "within 10%",
    "parse_rate": "answered with a number",
    "valid_rate": "valid answers",
    "exact_match": "exact match",
    "field_accuracy": "fields right",
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
    "token_f1": "word overlap (token F1)",
    "rouge_l": "ROUGE-L",
}
_SHORT_NAMES: dict[str, str] = {
    "mae": "avg error",
    "mae_parsed": "avg err (parsed)",
    "median_ae": "median err",
    "p90_ae": "p90 err",
    "max_ae": "worst err",
    "mape": "avg % err",
    "within_10pct": "within 10%",
    "parse_rate": "numeric",
    "valid_rate": "valid",
    "exact_match": "exact",
    "field_accuracy": "fields right",
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
    "token_f1": "token F1",
    "rouge_l": "ROUGE-L",
}
_RATE_METRICS = frozenset(
    {
        "within_10pct",
        "parse_rate",
        "valid_rate",
        "exact_match",
        "field_accuracy",
        "accuracy",
        "macro_f1",
        "token_f1",
        "rouge_l",
        "mape",
    }
)

MODEL_LABELS: dict[str, str] = {
    "zero_shot": "Base model (zero-shot)",
    "few_shot": "Base model + examples (few-shot)",
    "finetuned": "Fine-tuned model",
}
_SHORT_MODEL: dict[str, str] = {"zero_shot": "zero-shot", "few_shot": "few-shot", "finetuned": "fine-tuned"}
_MODEL_PHRASES: dict[str, str] = {
    "zero_shot": "the base model on its own",
    "few_shot": "the base model prompted with examples",
    "finetuned": "the fine-tuned model",
}

#: Below this many eval examples the report flags that the set is small.
MIN_EXAMPLES = 20
#: Below this many there is no verdict but "no_significant_difference".
MIN_EXAMPLES_FOR_VERDICT = 10
#: A fine-tuned model producing the right format less often than this gets a flag.
FORMAT_FLAG_BELOW = 0.9


def _better(metric: str, a: float | None, b: float | None) -> bool:
    """Whether value ``a`` beats ``b`` on ``metric`` (None never beats anything)."""
    if a is None:
        return False
    if b is None:
        return True
    return a < b if metric in LOWER_IS_BETTER else a > b


def _short(text: str | None, limit: int = 240) -> str:
    text = text if isinstance(text, str) else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"
