"""Evaluation: task detection, metrics by task, a paired bootstrap verdict, flips and the report.

Pure: stdlib only. Nothing here generates text; callers pass the reference answers and each model's
answers (strings, one per eval example, same order) and get back JSON-able dicts.

Tasks and their metrics (every rate and share is a fraction in [0, 1]):

=========  ==========================================================  ================================
task       metrics                                                     primary (direction)
=========  ==========================================================  ================================
numeric    parse_rate, mae, mae_parsed, median_ae, p90_ae, max_ae,     ``mae`` (lower is better)
           mape, within_10pct
json       valid_rate, exact_match, field_accuracy                     ``field_accuracy`` (higher)
label      valid_rate, accuracy, macro_f1 (+ per-label counts)         ``accuracy`` (higher)
text       exact_match, token_f1, rouge_l                              ``token_f1`` (higher)
=========  ==========================================================  ================================

How answers are read (decided here, stated in every report's ``scoring`` text):

- **Numbers: an answer counts only when it IS a number.** After removing surrounding spaces,
  quotes, backticks and ``*`` marks, one final period, a label of one to three words and a colon
  ("Price:", "Answer:", "Estimated price:") and one hedge ("about", "around", "approximately",
  "approx.", "roughly", "~", "≈"), what is left must be exactly one number: an optional sign, a
  currency symbol ($ € £ ¥ ₹, "US$") or code ("USD", "EUR", ...), a sign again ("$-12"), the
  number (thousands commas only in groups of three, decimals) and an optional unit: "%", a
  currency symbol, code or word ("349 USD", "40 dollars"), a common unit (:data:`KNOWN_UNITS`:
  "3 kg", "12 hours") or a unit the references themselves use ("3 widgets"). So ``"1,299.00"``
  -> 1299, ``"$349"`` -> 349, ``"-12"`` -> -12, ``"Price: about $349."`` -> 349. One exception,
  kept strict: a short sentence (at most 160 characters and 25 words, of letters, spaces and
  ``.,!?;:'"()-`` only) whose one and only number is marked as money ("The price is $349.00."
  -> 349; "It is 40 dollars." -> 40), with no digit glued to a letter anywhere. Everything else is
  not a number, however many digits it holds: "189ameragreen 36wou742 94 m", "Model X-200 costs
  3 4 5", "iPhone15", "3 for $10", "The 55-inch TV is $1,049.99." (two numbers), "10-20" (a
  range), "40k", "1e3", "3,5" (a European decimal comma), "forty". A reference answer is read by
  the same rule with any unit word allowed (:func:`reference_number`); whether a set of
  references is numeric at all is :func:`is_strict_number`'s call.
- **An answer with no number counts against the model**: its error is the reference value itself,
  as if it had answered 0 (for a reference of 0: the median reference value, so it still costs
  something). That is a floor, not a worst case: a wildly wrong number can cost more than no
  number, and any small constant ("0.99" every time) costs about as much as no number.
  ``mae_parsed`` shows the error over numeric answers only, so a model that is accurate but badly
  formatted can be told apart from one that is wrong. MAPE skips references equal to 0;
  within_10pct counts unparsed answers as misses.
- **JSON.** The answer may be wrapped in a code fence or surrounded by text; the outermost
  ``{...}`` is parsed. Answers that are not a JSON object score 0 on every JSON metric.
  ``exact_match`` is equality of the parsed objects; ``field_accuracy`` is, per example, the share
  of the reference's top-level keys whose value the answer gets right (strings compared ignoring
  case and extra spaces, numbers numerically, "349" equals 349); extra keys only cost exact match.
- **Labels.** Compared ignoring case, quotes and a final period. An answer that is not exactly a
  label but names exactly one known label as a whole word ("Category: billing") counts as that
  label; an answer naming none or several is wrong. ``valid_rate`` is the share of answers that
  name a known label. Macro F1 averages the F1 of each reference label.
- **Text.** Lower-cased, punctuation removed, split on whitespace; token F1 and ROUGE-L (longest
  common subsequence F1) per example; two empty answers match.

The verdict: the fine-tuned model against the better baseline (by the primary metric), by a paired
percentile bootstrap (seeded ``random.Random``) of the mean per-example difference. ``improved``
when the whole 95% interval is on the better side of zero and the mean change is at least the
smallest change that matters (:func:`min_effect`: 1 point for shares, 1% of the average reference
value for errors), ``worse`` likewise on the other side, else ``no_significant_difference``. The
floor matters: a paired bootstrap finds a consistent change of 0.99 (a model answering "0.99"
against one answering nothing) "significant", yet it means nothing. With fewer than
``MIN_EXAMPLES_FOR_VERDICT`` examples there is no verdict but ``no_significant_difference`` (and a
flag): a bootstrap of five examples says nothing.

**The constant answer** keeps every verdict honest. For every task the report scores giving one
typical answer to every example (:func:`know_nothing_guess`): the median reference value
(numbers), the most common label (labels), each top-level field's most common value (JSON), the
reference with the most words in common with the others (text, the medoid by token F1). It is
taken from the eval references themselves, which only flatters it. A model *beats* it when its
primary metric is better by at least the smallest change that matters (``beats_constant``).
Every model is compared with it, baselines included: the report flags each model that does not
beat it, the verdict sentence never calls a model good (or says "keep using" a baseline, or
"prompting is enough") when the constant answer beats it, and says "None of the models beats
always answering ..." when none does. It also flags a fine-tune that gives the same answer to
most examples.

**Promotion** (:func:`promotion_decision`): a fine-tune becomes its channel's default only when
its verdict is not ``worse`` AND it has learned something: not all answers empty, some answers
in the task's format, not one answer for every example while the references vary, and better
than the constant answer.
"""

from __future__ import annotations

import json
import math
import random
import re
import statistics
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import UsageError

TASKS = ("numeric", "json", "label", "text")
VERDICTS = ("improved", "no_significant_difference", "worse")

#: The primary metric of each task (DESIGN.md contract) and its direction.
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

# ---------------------------------------------------------------------------------------------
# Task detection
# ---------------------------------------------------------------------------------------------

# A bare number as a reference answer: optional sign and currency, thousands commas, decimals,
# an optional short unit or percent. "1,299.00", "$349", "-12", "12.5%", "40 USD".
_STRICT_NUMBER = re.compile(
    r"^\s*[-+\u2212]?\s*[$€£¥]?\s*[-+\u2212]?\s*(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?\s*(?:%|[a-zA-Z]{1,8})?\s*$"
)
_HAS_DIGIT = re.compile(r"\d")

#: Share of reference answers that must fit a structured type for the whole set to count as it.
DETECT_THRESHOLD = 0.95
#: Label sets: at most this many distinct answers, each at most ``LABEL_MAX_WORDS`` words.
LABEL_MAX_DISTINCT = 20
LABEL_MAX_WORDS = 4


def is_strict_number(text: str) -> bool:
    """True when ``text`` is a bare number (as a reference answer would be), e.g. ``"1,299.00"``."""
    return bool(_HAS_DIGIT.search(text)) and bool(_STRICT_NUMBER.match(text))


def detect_task(answers: Sequence[str]) -> str:
    """The task type of a set of reference answers: ``"numeric"``, ``"json"``, ``"label"`` or ``"text"``.

    - ``numeric``: at least 95% of the answers are bare numbers ("349.00", "$1,299", "-12").
    - ``json``: at least 95% are JSON objects (a code fence around them is allowed).
    - ``label``: at most 20 distinct answers of at most 4 words each, and answers repeat (distinct
      count at most half the number of answers), e.g. "billing" / "bug" / "feature request".
    - ``text``: anything else, and an empty list.

    Blank answers are ignored. Integer answers ("0"/"1", star ratings) count as numbers; force
    ``metric=accuracy`` to treat them as labels.
    """
    items = [a.strip() for a in answers if isinstance(a, str)]
    items = [a for a in items if a]
    if not items:
        return "text"
    need = DETECT_THRESHOLD * len(items)
    if sum(1 for a in items if is_strict_number(a)) >= need:
        return "numeric"
    if sum(1 for a in items if a[:1] in "{`" and parse_json_object(a) is not None) >= need:
        return "json"
    distinct = {label_key(a) for a in items}
    if (
        len(distinct) <= LABEL_MAX_DISTINCT
        and len(distinct) <= max(1, len(items) // 2)
        and all(len(a.split()) <= LABEL_MAX_WORDS for a in distinct)
    ):
        return "label"
    return "text"


def resolve_task(references: Sequence[str], metric: str | None = None) -> tuple[str, str]:
    """``(task, primary_metric)``: detected from ``references``, or forced by ``metric``.

    ``metric`` may name a task (``"numeric"``, ``"json"``, ``"label"``, ``"text"``: its default
    primary metric) or a per-example metric (``"mae"``, ``"within_10pct"``, ``"field_accuracy"``,
    ``"exact_match"`` (JSON when the references are JSON, else text), ``"valid_rate"``,
    ``"accuracy"``, ``"token_f1"``, ``"rouge_l"``). Anything else raises :class:`UsageError`
    listing what is accepted.
    """
    if metric is None or not metric.strip():
        task = detect_task(references)
        return task, PRIMARY_METRIC[task]
    name = metric.strip().lower().replace("-", "_")
    aliases = {
        "number": "numeric",
        "numbers": "numeric",
        "labels": "label",
        "classification": "label",
        "f1": "token_f1",
        "rouge": "rouge_l",
        "rougel": "rouge_l",
    }
    name = aliases.get(name, name)
    if name in TASKS:
        return name, PRIMARY_METRIC[name]
    owners = [task for task, names in PER_EXAMPLE_METRICS.items() if name in names]
    if not owners:
        accepted = sorted(set(TASKS) | {m for names in PER_EXAMPLE_METRICS.values() for m in names})
        raise UsageError(
            f"Unknown metric {metric!r}.",
            hint="Use one of: " + ", ".join(accepted) + " (or leave it out to detect it from the answers).",
        )
    if len(owners) > 1:
        detected = detect_task(references)
        task = detected if detected in owners else owners[-1]
    else:
        task = owners[0]
    return task, name


# ---------------------------------------------------------------------------------------------
# Reading answers
# ---------------------------------------------------------------------------------------------

#: Currency symbols an amount may carry, before or after the number ("$349", "349 €").
CURRENCY_SYMBOLS = "$€£¥₹"
#: Currency codes an amount may carry, before or after the number ("USD 349", "349 EUR").
CURRENCY_CODES = frozenset(
    {"usd", "eur", "gbp", "jpy", "cny", "rmb", "cad", "aud", "nzd", "chf", "inr", "sek", "nok", "dkk",
     "pln", "czk", "huf", "brl", "mxn", "hkd", "sgd", "krw", "zar", "try", "rub"}
)  # fmt: skip
#: Currency words after the number ("40 dollars").
CURRENCY_WORDS = frozenset(
    {"dollar", "dollars", "bucks", "euro", "euros", "pound", "pounds", "yen", "rupees"}
)
#: Unit words an answer's number may carry without the references using them ("3 kg", "12 hours").
#: The units the references themselves use are accepted too (see :func:`reference_units`).
KNOWN_UNITS = (
    CURRENCY_CODES
    | CURRENCY_WORDS
    | frozenset(
        {"percent", "pct", "kg", "g", "mg", "lb", "lbs", "oz", "t", "km", "m", "cm", "mm", "mi", "ft", "in",
         "inch", "inches", "l", "ml", "w", "kw", "kwh", "v", "mah", "gb", "tb", "mb", "hz", "khz", "mhz",
         "ghz", "s", "sec", "secs", "second", "seconds", "min", "mins", "minute", "minutes", "h", "hr",
         "hrs", "hour", "hours", "day", "days", "week", "weeks", "month", "months", "year", "years", "yr",
         "yrs", "point", "points", "pts", "star", "stars", "item", "items", "unit", "units", "pcs",
         "piece", "pieces", "people", "persons"}
    )
)  # fmt: skip
#: Hedges allowed before the number ("about 40"); they are not part of the value.
HEDGES = ("approximately", "approx.", "approx", "about", "around", "roughly", "~", "≈")

_NUMBER_BODY = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"
_CODES_RE = "|".join(sorted(CURRENCY_CODES, key=len, reverse=True))
# One number, as a whole answer: optional sign, currency symbol or code, sign again ("$-12"), the
# number (thousands commas only in groups of three), an optional unit, percent or currency after.
_WHOLE_NUMBER = re.compile(
    rf"^(?P<sign>[-+\u2212])?\s?(?P<cur>US\$|[{CURRENCY_SYMBOLS}]|(?:{_CODES_RE})(?=[\s\d.+\-\u2212]))?\s?"
    rf"(?P<sign2>[-+\u2212])?\s?(?P<num>{_NUMBER_BODY})"
    rf"(?:\s?(?P<unit>%|[{CURRENCY_SYMBOLS}]|[^\W\d_]+))?$",
    re.IGNORECASE,
)
# "Price:", "Final answer:", "Estimated price:": one to three words of letters and a colon.
_LABEL_PREFIX = re.compile(r"^[^\W\d_]+(?:\s[^\W\d_]+){0,2}\s?:\s*")
_HEDGE_PREFIX = re.compile(
    r"^(?:(?:" + "|".join(re.escape(h) for h in HEDGES if h[0].isalpha()) + r")\s+|[~≈]\s*)", re.IGNORECASE
)
# Characters an answer may be wrapped in: quotes, backticks, markdown bold/italics.
_WRAPPERS = "\"'`*“”‘’"
# The sentence rule: a short sentence of words, spaces and basic punctuation around one amount.
_SENTENCE_CHARS = re.compile(rf"^(?:[^\W_]|[\s.,!?;:'\"()\-’{CURRENCY_SYMBOLS}])*$")
_ANY_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_GLUED = re.compile(r"[^\W\d_]\d|\d[^\W\d_]")
_AMOUNT_IN_SENTENCE = re.compile(
    rf"(?<![\w.,])(?P<sign>[-\u2212])?(?P<cur>US\$|[{CURRENCY_SYMBOLS}]|\b(?:{_CODES_RE}))?\s?"
    rf"(?P<sign2>[-\u2212])?(?P<num>{_NUMBER_BODY})(?!\d|[.,]\d)"
    rf"(?:\s?(?P<unit>[{CURRENCY_SYMBOLS}]|[^\W\d_]+\b))?",
    re.IGNORECASE,
)
#: The sentence rule's limits: at most this many characters and words.
SENTENCE_MAX_CHARS = 160
SENTENCE_MAX_WORDS = 25


def _unwrap(text: str) -> str:
    """``text`` without surrounding spaces, quotes, backticks, bold marks and one final period."""
    previous = None
    while previous != text:
        previous = text
        text = text.strip().strip(_WRAPPERS).strip()
        if text.endswith(".") and not text.endswith(".."):
            text = text[:-1]
    return text


def _value(match: re.Match[str]) -> float | None:
    """The signed value of a ``_WHOLE_NUMBER``/``_AMOUNT_IN_SENTENCE`` match (None: two signs, or
    not finite)."""
    signs = (match.group("sign") or "") + (match.group("sign2") or "")
    if len(signs) > 1:
        return None
    value = float(match.group("num").replace(",", ""))
    if not math.isfinite(value):
        return None
    return -value if signs in ("-", "\u2212") else value


def _read_whole_number(text: str, unit_ok: Callable[[str], bool]) -> tuple[float, str | None] | None:
    """(value, unit) when ``text`` (unwrapped, prefixes removed) is one number, else None."""
    body = _unwrap(text)
    body = _LABEL_PREFIX.sub("", body, count=1)
    body = _unwrap(_HEDGE_PREFIX.sub("", body, count=1))
    match = _WHOLE_NUMBER.match(body)
    if match is None:
        return None
    unit = match.group("unit")
    if unit is not None and unit != "%" and unit not in CURRENCY_SYMBOLS and not unit_ok(unit.casefold()):
        return None
    value = _value(match)
    return None if value is None else (value, unit)


def _read_amount_in_sentence(text: str) -> float | None:
    """The sentence rule (see the module docstring): the amount in a short sentence whose only
    number is marked as money, else None."""
    body = _unwrap(text)
    if (
        len(body) > SENTENCE_MAX_CHARS
        or len(body.split()) > SENTENCE_MAX_WORDS
        or len(_ANY_NUMBER.findall(body)) != 1
        or _GLUED.search(body)
        or not _SENTENCE_CHARS.match(body)
    ):
        return None
    for match in _AMOUNT_IN_SENTENCE.finditer(body):
        unit = (match.group("unit") or "").casefold()
        money_after = unit in CURRENCY_CODES or unit in CURRENCY_WORDS or (unit and unit in CURRENCY_SYMBOLS)
        if match.group("cur") or money_after:
            return _value(match)
    return None


def parse_number(text: str | None, *, units: Collection[str] = ()) -> float | None:
    """The number an answer gives, or None when the answer is not a number (module docstring).

    The answer must BE one number: ``"349.00"``, ``"$1,299"``, ``"-12"``, ``"12.5%"``,
    ``"349 USD"``, ``"about 40 dollars"``, ``"Price: ~$349."``, ``"`349`"``, or a short sentence
    whose only number is an amount of money (``"The price is $349.00."``). Digits picked out of
    other text never count: ``"189ameragreen 36wou742 94 m"``, ``"3 for $10"``, ``"iPhone15"``,
    ``"40k"`` and ``"1e3"`` are all None. ``units``: unit words (lower case) accepted after the
    number besides :data:`KNOWN_UNITS`; :func:`score_numeric` passes the references' own units.
    """
    if not isinstance(text, str) or len(text) > 1000:
        return None
    extra = {u.casefold() for u in units}
    whole = _read_whole_number(text, lambda unit: unit in KNOWN_UNITS or unit in extra)
    if whole is not None:
        return whole[0]
    return _read_amount_in_sentence(text)


def reference_number(text: str | None) -> float | None:
    """The value of a reference answer, by the answer rule of :func:`parse_number` with any unit
    word accepted (the references define the task's units: "3 widgets"). None when the reference
    is not a number; :func:`is_strict_number` decides whether a set of references is numeric."""
    if not isinstance(text, str):
        return None
    whole = _read_whole_number(text, lambda unit: True)
    return whole[0] if whole is not None else _read_amount_in_sentence(text)


def reference_units(references: Sequence[str]) -> frozenset[str]:
    """The unit words (lower case) the reference answers write after their numbers ("3 widgets":
    ``{"widgets"}``); answers may use them too."""
    found: set[str] = set()
    for ref in references:
        if isinstance(ref, str):
            whole = _read_whole_number(ref, lambda unit: True)
            if whole is not None and whole[1]:
                found.add(whole[1].casefold())
    return frozenset(found)


def parse_json_object(text: str | None) -> dict[str, Any] | None:
    """The JSON object in ``text`` (bare, in a code fence, or the outermost ``{...}``), or None."""
    if not isinstance(text, str):
        return None
    stripped = text.strip()
    candidates = [stripped]
    fence = re.match(r"^```[a-zA-Z]*\s*(.*?)\s*```$", stripped, re.DOTALL)
    if fence:
        candidates.append(fence.group(1))
    start, end = stripped.find("{"), stripped.rfind("}")
    if 0 <= start < end:
        candidates.append(stripped[start : end + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def label_key(text: str) -> str:
    """Labels compare case-insensitively, ignoring surrounding quotes, spaces and a final period."""
    return " ".join(text.strip().strip("\"'`").rstrip(".").strip().casefold().split())


def match_label(answer: str | None, labels: Sequence[str]) -> str | None:
    """The known label (a :func:`label_key`) that ``answer`` names, or None (none or several)."""
    if not isinstance(answer, str):
        return None
    key = label_key(answer)
    if key in labels:
        return key
    found = [lab for lab in labels if lab and re.search(r"(?<!\w)" + re.escape(lab) + r"(?!\w)", key)]
    # A longer label containing a shorter one ("not spam" vs "spam") is one mention, not two.
    found = [lab for lab in found if not any(lab != other and lab in other for other in found)]
    return found[0] if len(found) == 1 else None


_PUNCT = re.compile(r"[^\w\s]|_", re.UNICODE)


def text_tokens(text: str | None) -> list[str]:
    """Lower-cased words with punctuation removed (the text metrics' tokens)."""
    if not isinstance(text, str):
        return []
    return _PUNCT.sub(" ", text.casefold()).split()


# ---------------------------------------------------------------------------------------------
# Small statistics helpers
# ---------------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# ---------------------------------------------------------------------------------------------
# Scoring one model
# ---------------------------------------------------------------------------------------------


@dataclass
class Scores:
    """One model's results on one eval set.

    ``metrics``: metric name -> value (None when undefined, e.g. on an empty set), plus ``n``.
    ``per_example``: for each per-example metric, one score per usable example; its mean is the
    metric. ``correct``: per example, whether the answer counts as right for the flips (numeric:
    within 10%; json: every field right; label: right label; text: token F1 >= 0.5).
    ``details``: task extras (label: ``per_label``; json: ``fields``).
    """

    task: str
    metrics: dict[str, float | int | None]
    per_example: dict[str, list[float]]
    correct: list[bool]
    details: dict[str, Any] = field(default_factory=dict)


def _usable(task: str, references: Sequence[str]) -> list[int]:
    """Indices of references that can be scored (a numeric/json reference must parse)."""
    if task == "numeric":
        return [i for i, r in enumerate(references) if reference_number(r) is not None]
    if task == "json":
        return [i for i, r in enumerate(references) if parse_json_object(r) is not None]
    return list(range(len(references)))


def numeric_zero_cost(references: Sequence[float]) -> float:
    """What an answer without a number costs when the reference is 0: the median absolute
    reference value (1 when that is 0 too)."""
    median = statistics.median(abs(r) for r in references) if references else 0.0
    return median or 1.0


def score_numeric(references: Sequence[str], predictions: Sequence[str]) -> Scores:
    """Numeric metrics; references that are not numbers are skipped (the caller counts them)."""
    refs = [reference_number(r) for r in references]
    units = reference_units(references)  # an answer may use the references' own units ("3 widgets")
    zero_cost = numeric_zero_cost([r for r in refs if r is not None])
    errors: list[float] = []
    parsed_errors: list[float] = []
    within: list[float] = []
    ape: list[float] = []
    for ref, pred_text in zip(refs, predictions, strict=True):
        if ref is None:
            continue
        pred = parse_number(pred_text, units=units)
        if pred is None:
            err = abs(ref) if ref != 0 else zero_cost
        else:
            err = abs(pred - ref)
            parsed_errors.append(err)
        errors.append(err)
        hit = pred is not None and err <= 0.1 * abs(ref) + 1e-9 * max(1.0, abs(ref))
        within.append(1.0 if hit else 0.0)
        if ref != 0:
            ape.append(err / abs(ref))
    n = len(errors)
    metrics: dict[str, float | int | None] = {
        "n": n,
        "mae": _mean(errors),
        "median_ae": percentile(errors, 0.5),
        "p90_ae": percentile(errors, 0.9),
        "max_ae": max(errors) if errors else None,
        "mape": _mean(ape),
        "within_10pct": _mean(within),
        "parse_rate": len(parsed_errors) / n if n else None,
        "mae_parsed": _mean(parsed_errors),
    }
    return Scores("numeric", metrics, {"mae": errors, "within_10pct": within}, [w == 1.0 for w in within])


def _same_value(ref: Any, pred: Any, *, lenient: bool) -> bool:
    """JSON value equality: bools are not numbers; numbers compare numerically. ``lenient`` also
    ignores case and extra spaces in strings and lets a numeric string equal a number."""
    if isinstance(ref, bool) or isinstance(pred, bool):
        return isinstance(ref, bool) and isinstance(pred, bool) and ref == pred
    if isinstance(ref, int | float) and isinstance(pred, int | float):
        return math.isclose(ref, pred, rel_tol=1e-9, abs_tol=1e-12)
    if lenient and isinstance(ref, int | float) and isinstance(pred, str) and is_strict_number(pred):
        return _same_value(ref, reference_number(pred), lenient=False)
    if lenient and isinstance(pred, int | float) and isinstance(ref, str) and is_strict_number(ref):
        return _same_value(reference_number(ref), pred, lenient=False)
    if isinstance(ref, str) and isinstance(pred, str):
        if lenient:
            return " ".join(ref.casefold().split()) == " ".join(pred.casefold().split())
        return ref == pred
    if isinstance(ref, dict) and isinstance(pred, dict):
        return ref.keys() == pred.keys() and all(_same_value(ref[k], pred[k], lenient=lenient) for k in ref)
    if isinstance(ref, list) and isinstance(pred, list):
        return len(ref) == len(pred) and all(
            _same_value(a, b, lenient=lenient) for a, b in zip(ref, pred, strict=True)
        )
    return ref is None and pred is None


def score_json(references: Sequence[str], predictions: Sequence[str]) -> Scores:
    """JSON metrics; references that are not JSON objects are skipped."""
    valid: list[float] = []
    exact: list[float] = []
    fields_acc: list[float] = []
    per_field: dict[str, list[int]] = {}
    for ref_text, pred_text in zip(references, predictions, strict=True):
        ref = parse_json_object(ref_text)
        if ref is None:
            continue
        pred = parse_json_object(pred_text)
        valid.append(1.0 if pred is not None else 0.0)
        exact.append(1.0 if pred is not None and _same_value(ref, pred, lenient=False) else 0.0)
        if not ref:
            fields_acc.append(1.0 if pred == {} else 0.0)
            continue
        right = 0
        for key, value in ref.items():
            ok = pred is not None and key in pred and _same_value(value, pred[key], lenient=True)
            right += ok
            per_field.setdefault(key, [0, 0])
            per_field[key][0] += ok
            per_field[key][1] += 1
        fields_acc.append(right / len(ref))
    n = len(valid)
    metrics: dict[str, float | int | None] = {
        "n": n,
        "field_accuracy": _mean(fields_acc),
        "exact_match": _mean(exact),
        "valid_rate": _mean(valid),
    }
    details = {"fields": {k: ok / total for k, (ok, total) in sorted(per_field.items())}}
    return Scores(
        "json",
        metrics,
        {"field_accuracy": fields_acc, "exact_match": exact, "valid_rate": valid},
        [f == 1.0 for f in fields_acc],
        details,
    )


def score_label(references: Sequence[str], predictions: Sequence[str]) -> Scores:
    """Label metrics over the label set of the references."""
    display: dict[str, str] = {}
    for ref in references:
        display.setdefault(label_key(ref), ref.strip())
    labels = sorted(display, key=lambda k: (-len(k), k))  # longest first for matching
    gold = [label_key(r) for r in references]
    guessed = [match_label(p, labels) for p in predictions]
    if len(gold) != len(guessed):
        raise ValueError("references and predictions differ in length")
    correct = [g == p for g, p in zip(gold, guessed, strict=True)]
    per_label: dict[str, dict[str, float | int]] = {}
    f1s: list[float] = []
    for lab in sorted(display):
        support = sum(1 for g in gold if g == lab)
        predicted = sum(1 for p in guessed if p == lab)
        hits = sum(1 for g, p in zip(gold, guessed, strict=True) if g == lab and p == lab)
        precision = hits / predicted if predicted else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        f1s.append(f1)
        per_label[display[lab]] = {
            "support": support,
            "predicted": predicted,
            "correct": hits,
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }
    n = len(gold)
    acc = [1.0 if c else 0.0 for c in correct]
    metrics: dict[str, float | int | None] = {
        "n": n,
        "accuracy": _mean(acc),
        "macro_f1": _mean(f1s) if n else None,
        "valid_rate": sum(1 for p in guessed if p is not None) / n if n else None,
        "unknown_answers": sum(1 for p in guessed if p is None),
    }
    return Scores("label", metrics, {"accuracy": acc}, correct, {"per_label": per_label})


def token_f1(reference: str, prediction: str) -> float:
    """Bag-of-words F1 between the two texts' :func:`text_tokens` (two empty texts: 1.0)."""
    ref, pred = text_tokens(reference), text_tokens(prediction)
    if not ref or not pred:
        return 1.0 if ref == pred else 0.0
    common: dict[str, int] = {}
    counts: dict[str, int] = {}
    for tok in ref:
        counts[tok] = counts.get(tok, 0) + 1
    overlap = 0
    for tok in pred:
        if counts.get(tok, 0) > common.get(tok, 0):
            common[tok] = common.get(tok, 0) + 1
            overlap += 1
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists.

    Bit-parallel (Hyyrö 2004): one big-integer bit per token of ``b``, so a 500 x 500 comparison
    takes well under a millisecond instead of the textbook table's tens of milliseconds.
    """
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


def rouge_l(reference: str, prediction: str) -> float:
    """ROUGE-L F1: longest common subsequence of tokens over both lengths (two empty texts: 1.0)."""
    ref, pred = text_tokens(reference), text_tokens(prediction)
    if not ref or not pred:
        return 1.0 if ref == pred else 0.0
    lcs = lcs_length(ref, pred)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def score_text(references: Sequence[str], predictions: Sequence[str]) -> Scores:
    """Free-text metrics."""
    f1: list[float] = []
    rl: list[float] = []
    exact: list[float] = []
    for ref, pred in zip(references, predictions, strict=True):
        f1.append(token_f1(ref, pred))
        rl.append(rouge_l(ref, pred))
        exact.append(1.0 if text_tokens(ref) == text_tokens(pred) else 0.0)
    metrics: dict[str, float | int | None] = {
        "n": len(f1),
        "token_f1": _mean(f1),
        "rouge_l": _mean(rl),
        "exact_match": _mean(exact),
    }
    return Scores(
        "text", metrics, {"token_f1": f1, "rouge_l": rl, "exact_match": exact}, [s >= 0.5 for s in f1]
    )


_SCORERS = {"numeric": score_numeric, "json": score_json, "label": score_label, "text": score_text}


def score(task: str, references: Sequence[str], predictions: Sequence[str]) -> Scores:
    """Score one model's answers on ``task``. Lengths must match (a caller bug otherwise)."""
    if task not in _SCORERS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
    return _SCORERS[task](list(references), [p if isinstance(p, str) else "" for p in predictions])


def compute_metrics(task: str, references: Sequence[str], predictions: Sequence[str]) -> dict[str, Any]:
    """Just the metrics dict of :func:`score` (what the baseline progress event carries)."""
    return dict(score(task, references, predictions).metrics)


# ---------------------------------------------------------------------------------------------
# The verdict
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A paired bootstrap result: the mean of (candidate - baseline) per-example scores and its CI."""

    mean_difference: float
    low: float
    high: float
    confidence: float
    resamples: int
    seed: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "mean_difference": self.mean_difference,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "resamples": self.resamples,
            "seed": self.seed,
        }


def paired_bootstrap(
    candidate: Sequence[float],
    baseline: Sequence[float],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap CI of mean(candidate - baseline), resampling examples (pairs) with
    replacement, seeded. Raises ValueError on mismatched or empty inputs."""
    if len(candidate) != len(baseline):
        raise ValueError("paired scores must have the same length")
    if not candidate:
        raise ValueError("no examples to compare")
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError("confidence must be in (0, 1) and resamples >= 1")
    diffs = [c - b for c, b in zip(candidate, baseline, strict=True)]
    n = len(diffs)
    mean = math.fsum(diffs) / n
    if all(d == diffs[0] for d in diffs):
        return Interval(mean, mean, mean, confidence, resamples, seed)
    rng = random.Random(seed)
    means = sorted(math.fsum(rng.choices(diffs, k=n)) / n for _ in range(resamples))
    alpha = (1 - confidence) / 2
    low = means[max(0, math.floor(alpha * resamples))]
    high = means[min(resamples - 1, math.ceil((1 - alpha) * resamples) - 1)]
    return Interval(mean, low, high, confidence, resamples, seed)


def decide(interval: Interval, *, higher_is_better: bool, min_effect: float = 0.0) -> str:
    """``improved`` / ``worse`` when the whole interval is on one side of zero and the mean change
    is at least ``min_effect``; else ``no_significant_difference``."""
    if abs(interval.mean_difference) < min_effect:
        return "no_significant_difference"
    if interval.low > 0 or interval.high < 0:
        better = interval.low > 0 if higher_is_better else interval.high < 0
        return "improved" if better else "worse"
    return "no_significant_difference"


#: The smallest change in a share (accuracy, F1, ...) that counts: one percentage point.
MIN_EFFECT_SHARE = 0.01
#: The smallest change in an error that counts, as a fraction of the average reference value.
MIN_EFFECT_RELATIVE = 0.01


def min_effect(metric: str, references: Sequence[str]) -> float:
    """The smallest change in ``metric`` that counts as a difference (see the module docstring)."""
    if metric in LOWER_IS_BETTER:
        values = [abs(v) for v in (reference_number(r) for r in references) if v is not None]
        return MIN_EFFECT_RELATIVE * (math.fsum(values) / len(values)) if values else 0.0
    return MIN_EFFECT_SHARE


def should_promote(verdict: str | None) -> bool:
    """Whether a verdict alone allows promotion: it is not ``worse``.

    Kept for compatibility (it is part of ``engine``'s API); the promotion rule itself is
    :func:`promotion_decision`, which also refuses a fine-tune that has not learned the task.
    ``None`` (no evaluation) does not promote; an unknown string raises ValueError.
    """
    if verdict is None:
        return False
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}")
    return verdict != "worse"


_FORMAT_FAILURES: dict[str, str] = {
    "numeric": "of its answers were a number",
    "json": "of its answers were valid JSON",
    "label": "of its answers named a known label",
}


def promotion_decision(report: Mapping[str, Any], *, finetuned: str = "finetuned") -> tuple[bool, list[str]]:
    """The promotion rule: whether the fine-tune in ``report`` (:func:`build_report`'s dict, or
    one read back from JSON) may become its channel's default model, and if not, why.

    Returns ``(promote, reasons)``; ``reasons`` is empty exactly when ``promote`` is True, and each
    reason is a plain-words clause that completes "... was NOT made this channel's default: ".
    A fine-tune is refused when any of these holds (all that hold are listed, in this order):

    1. it has no verdict (not evaluated, or no baseline), or its verdict is ``worse``;
    2. all of its answers are empty;
    3. none of its answers had the task's format (numeric: a number, json: valid JSON, label: a
       known label; free text has no format) - it has not learned the format;
    4. it gave the same answer to every example although the reference answers vary;
    5. it is no better than the constant answer on the primary metric (``beats_constant``: by at
       least the smallest change that matters), even when its verdict is not ``worse``.

    Reports written before checks 2, 4 and 5 existed lack their keys; those checks are skipped.
    An unknown verdict raises ValueError.
    """
    metrics = report.get("finetuned")
    verdict = report.get("verdict")
    if verdict is not None and verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}")
    if metrics is None or verdict is None:
        return False, ["it was not evaluated against a baseline"]
    task, metric = report.get("task"), report.get("metric")
    name = METRIC_NAMES.get(metric, metric)
    reasons: list[str] = []
    if verdict == "worse":
        best = report.get("best_baseline")
        base = (report.get("baseline") or {}).get(best) or {}
        reasons.append(
            f"it did worse than {_MODEL_PHRASES.get(best, best)} ({name} "
            f"{format_metric(metric, metrics.get(metric))} vs {format_metric(metric, base.get(metric))})"
        )
    stats = (report.get("answer_stats") or {}).get(finetuned) or {}
    all_empty = bool(stats.get("n")) and stats.get("empty") == stats.get("n")
    if all_empty:
        reasons.append("all of its answers were empty")
    fmt = FORMAT_METRIC.get(task or "")
    if fmt is not None and metrics.get(fmt) == 0 and not all_empty:
        reasons.append(f"0% {_FORMAT_FAILURES[task]}, so it has not learned the format")
    refs = report.get("reference_stats") or {}
    if (
        not all_empty
        and (stats.get("n") or 0) >= 2
        and stats.get("distinct") == 1
        and (refs.get("distinct") or 0) > 1
    ):
        reasons.append(
            f"it gave the same answer ({_short(stats.get('top_answer'), 60)!r}) to every example although "
            "the right answers vary"
        )
    guess = report.get("guess")
    if guess and (report.get("beats_constant") or {}).get(finetuned) is False:
        reasons.append(
            f"it is no better than always answering {_short(guess['answer'], 60)!r} ({name} "
            f"{format_metric(metric, metrics.get(metric))} vs {format_metric(metric, guess['metrics'].get(metric))}), "
            "so it has not learned the task"
        )
    return not reasons, reasons


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


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


def scoring_note(task: str) -> str:
    """How answers were read and how bad answers counted, in one paragraph for the report."""
    notes = {
        "numeric": (
            "An answer counts as a number only when it is one: after removing surrounding spaces, "
            "quotes, backticks, a final period, a label such as 'Price:' and a hedge such as 'about', "
            "'approximately' or '~', what is left must be a single number, with an optional sign, "
            "currency symbol or code, thousands commas, decimals and a unit or percent ('$1,299.00', "
            "'349 USD', '12.5%', '40 dollars'). A short sentence counts only when its one and only number "
            "is an amount of money ('The price is $349.00.'). Digits picked out of other text never count "
            "('189ameragreen 36wou742' is not a number, nor is '3 for $10'). An answer that is not a number "
            "counts as an error as large as the reference value, as if it said 0 (for a reference of 0, "
            "the median reference value); 'numeric' is the share of answers that were numbers and "
            "'avg err (parsed)' the average error over those. Changes smaller than 1% of the average "
            "reference value count as no difference."
        ),
        "json": (
            "Each answer must contain a JSON object (code fences and surrounding text are tolerated). "
            "An answer without one scores 0 on every field. Changes under 1 point count as no "
            "difference. Field values compare ignoring case and "
            "extra spaces; extra keys only cost exact match."
        ),
        "label": (
            "An answer counts as a label when it is one (ignoring case and a final period) or names "
            "exactly one known label; anything else is wrong. Changes under 1 point count as no difference."
        ),
        "text": (
            "Answers are compared word by word after lower-casing and removing punctuation; token F1 "
            "is the overlap of words, ROUGE-L the longest run of words in the same order. Changes under "
            "1 point count as no difference."
        ),
    }
    return notes[task]


def build_report(
    references: Sequence[str],
    predictions: Mapping[str, Sequence[str]],
    *,
    task: str | None = None,
    metric: str | None = None,
    prompts: Sequence[str] | None = None,
    finetuned: str = "finetuned",
    seed: int = 0,
    resamples: int = 2000,
    confidence: float = 0.95,
    min_examples: int = MIN_EXAMPLES,
    max_flips: int = 3,
) -> dict[str, Any]:
    """The evaluation report as a JSON-able dict.

    ``predictions`` maps model names (``zero_shot``, ``few_shot``, ``finetuned``; any subset, any
    other name counts as a baseline) to one answer per reference. ``task`` forces the task,
    ``metric`` is the user's ``metric=`` option (see :func:`resolve_task`); neither: detected.
    ``prompts`` (optional, same length) are shown with the flips.

    Keys: ``task``, ``metric``, ``higher_is_better``, ``n`` (scored examples), ``skipped``
    (references that could not be scored), ``baseline`` ({name: metrics}), ``finetuned`` (metrics
    or None), ``best_baseline``, ``verdict`` (None without a fine-tuned model or a baseline),
    ``interval`` (the bootstrap of fine-tuned minus best baseline, in the primary metric's units,
    so negative is better for errors; as :meth:`Interval.to_dict`, plus ``compared``), ``flags``
    ([{code, message}]), ``flips`` ({rule, fixed, broken, fixed_count, broken_count}),
    ``scoring`` (how answers counted), ``details`` ({name: task extras}), ``per_example``
    ({name: primary per-example scores}), ``guess`` (the constant-answer reference,
    :func:`know_nothing_guess`, or None), ``beats_constant`` ({name: whether that model beats the
    constant answer by at least ``min_effect``; empty without a constant answer}), ``min_effect``
    (the smallest change that counts, :func:`min_effect`), ``answer_stats`` ({name:
    :func:`answer_stats`} over the scored examples), ``reference_stats`` (the same for the
    references), ``summary`` (the verdict in plain words, which never presents a model that the
    constant answer beats as good). ``interval`` also holds ``min_effect``.
    """
    references = list(references)
    for name, answers in predictions.items():
        if len(answers) != len(references):
            raise ValueError(f"{name}: {len(answers)} predictions for {len(references)} references")
    if prompts is not None and len(prompts) != len(references):
        raise ValueError("prompts and references differ in length")
    if task is not None and metric is None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}")
        primary = PRIMARY_METRIC[task]
    elif task is not None and metric is not None:
        primary = resolve_task(references, metric)[1]
        if primary not in PER_EXAMPLE_METRICS[task]:
            primary = PRIMARY_METRIC[task]
    else:
        task, primary = resolve_task(references, metric)
    higher = primary not in LOWER_IS_BETTER
    usable = _usable(task, references)
    refs = [references[i] for i in usable]
    scores = {name: score(task, refs, [answers[i] for i in usable]) for name, answers in predictions.items()}
    n = len(usable)
    smallest = min_effect(primary, refs)
    guess = know_nothing_guess(task, refs)

    baselines = [name for name in scores if name != finetuned]
    best = None
    for name in baselines:
        if best is None or _better(
            primary, scores[name].metrics.get(primary), scores[best].metrics.get(primary)
        ):
            best = name
    ft = scores.get(finetuned)

    verdict: str | None = None
    interval: dict[str, Any] | None = None
    if ft is not None and best is not None and n > 0:
        result = paired_bootstrap(
            ft.per_example[primary],
            scores[best].per_example[primary],
            resamples=resamples,
            confidence=confidence,
            seed=seed,
        )
        verdict = (
            decide(result, higher_is_better=higher, min_effect=smallest)
            if n >= MIN_EXAMPLES_FOR_VERDICT
            else "no_significant_difference"
        )
        interval = {**result.to_dict(), "min_effect": smallest, "compared": [finetuned, best]}
    elif ft is not None and best is not None:
        verdict = "no_significant_difference"

    report: dict[str, Any] = {
        "task": task,
        "metric": primary,
        "higher_is_better": higher,
        "n": n,
        "skipped": len(references) - n,
        "baseline": {name: scores[name].metrics for name in baselines},
        "finetuned": ft.metrics if ft is not None else None,
        "best_baseline": best,
        "verdict": verdict,
        "interval": interval,
        "flags": [],
        "flips": _flips(
            scores, usable, references, predictions, prompts, finetuned, best, primary, max_flips
        ),
        "scoring": scoring_note(task),
        "guess": guess,
        "min_effect": smallest,
        "beats_constant": (
            {
                name: beats_constant(primary, s.metrics.get(primary), guess["metrics"].get(primary), smallest)
                for name, s in scores.items()
            }
            if guess is not None and n > 0
            else {}
        ),
        "answer_stats": {
            name: answer_stats([answers[i] for i in usable]) for name, answers in predictions.items()
        },
        "reference_stats": answer_stats(refs),
        "details": {name: s.details for name, s in scores.items() if s.details},
        "per_example": {name: s.per_example[primary] for name, s in scores.items()},
    }
    report["flags"] = _flags(
        report,
        scores,
        finetuned,
        min_examples,
        [predictions[finetuned][i] for i in usable] if finetuned in predictions else [],
        refs,
    )
    report["summary"] = verdict_sentence(report)
    return report


#: The text constant answer is chosen among at most this many evenly spaced references (each
#: compared with all of them), so a large eval set costs seconds, not minutes.
TEXT_MEDOID_CANDIDATES = 200

#: How each task's constant answer is chosen, for the reports.
CONSTANT_RULES: dict[str, str] = {
    "numeric": "the median reference value",
    "label": "the most common label",
    "json": "each field's most common value in the references",
    "text": "the reference answer with the most words in common with all the others",
}


def know_nothing_guess(task: str, references: Sequence[str]) -> dict[str, Any] | None:
    """The constant-answer reference: what giving the same typical answer to every example
    scores. None when there is nothing to take it from.

    - numeric: the median reference value (the lower median, as the reference wrote it);
    - label: the most common label (ties: alphabetical);
    - json: an object with, for each top-level key of the references (in order of first
      appearance), its most common value (ties: the value seen first);
    - text: the medoid, the reference with the highest mean token F1 to all references (itself
      included; ties: the earliest), chosen among at most :data:`TEXT_MEDOID_CANDIDATES`.

    ``{"answer": str, "rule": str, "metrics": {...}}``. The answer is taken from the eval
    references themselves, so it is a little better than a real know-nothing guess: beating it is
    the least a model should do.
    """
    refs = [r for r in references if isinstance(r, str)]
    if task == "numeric":
        values = sorted((v, r.strip()) for r in refs if (v := reference_number(r)) is not None)
        if not values:
            return None
        answer = values[(len(values) - 1) // 2][1]
    elif task == "label":
        if not refs:
            return None
        counts: dict[str, int] = {}
        shown: dict[str, str] = {}
        for r in refs:
            counts[label_key(r)] = counts.get(label_key(r), 0) + 1
            shown.setdefault(label_key(r), r.strip())
        answer = shown[min(counts, key=lambda k: (-counts[k], k))]
    elif task == "json":
        objects = [obj for r in refs if (obj := parse_json_object(r)) is not None]
        if not objects:
            return None
        answer = json.dumps(_typical_object(objects), ensure_ascii=False)
    elif task == "text":
        if not refs:
            return None
        answer = refs[_medoid(refs)]
    else:
        return None
    return {
        "answer": answer,
        "rule": CONSTANT_RULES[task],
        "metrics": score(task, references, [answer] * len(references)).metrics,
    }


def _typical_object(objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """For each top-level key (first-appearance order), its most common value (ties: first seen)."""
    counts: dict[str, dict[str, int]] = {}
    values: dict[str, dict[str, Any]] = {}
    for obj in objects:
        for key, value in obj.items():
            canonical = json.dumps(value, sort_keys=True, ensure_ascii=False)
            counts.setdefault(key, {})
            counts[key][canonical] = counts[key].get(canonical, 0) + 1
            values.setdefault(key, {}).setdefault(canonical, value)
    # max() keeps the first of equal counts, and dicts keep insertion (first-seen) order.
    return {key: values[key][max(seen, key=seen.__getitem__)] for key, seen in counts.items()}


def _medoid(texts: Sequence[str]) -> int:
    """Index of the text with the highest mean token F1 to all texts (see :func:`know_nothing_guess`)."""
    bags = [Counter(text_tokens(t)) for t in texts]
    sizes = [sum(b.values()) for b in bags]

    def f1(i: int, j: int) -> float:  # token_f1 on pre-counted tokens
        if not sizes[i] or not sizes[j]:
            return 1.0 if sizes[i] == sizes[j] else 0.0
        overlap = sum((bags[i] & bags[j]).values())
        return 2 * overlap / (sizes[i] + sizes[j])

    step = max(1, math.ceil(len(texts) / TEXT_MEDOID_CANDIDATES))
    candidates = range(0, len(texts), step)
    return max(candidates, key=lambda i: (math.fsum(f1(i, j) for j in range(len(texts))), -i))


def beats_constant(metric: str, value: float | None, constant: float | None, smallest: float = 0.0) -> bool:
    """Whether a model's ``value`` of ``metric`` beats the constant answer's by at least
    ``smallest`` (the smallest change that matters, :func:`min_effect`), and strictly. A missing
    value never beats; a missing constant is beaten by any value; a perfect value (no error,
    every answer right) counts as beating it, since nothing can do better (where every reference
    is the same answer, the constant answer is perfect too)."""
    if value is None:
        return False
    if constant is None or value == (0.0 if metric in LOWER_IS_BETTER else 1.0):
        return True
    gain = constant - value if metric in LOWER_IS_BETTER else value - constant
    return gain > 0 and gain >= smallest


def answer_stats(answers: Sequence[str | None]) -> dict[str, Any]:
    """How varied a model's answers are, compared ignoring case and extra spaces: ``n``,
    ``empty`` (blank answers), ``distinct`` (different answers), ``top_answer`` (the most
    common, shortened to 120 characters) and ``top_count`` (how often it appears)."""
    keys = [" ".join((a or "").casefold().split()) if isinstance(a, str) else "" for a in answers]
    top = _same_answer([a if isinstance(a, str) else "" for a in answers])
    return {
        "n": len(keys),
        "empty": sum(1 for k in keys if not k),
        "distinct": len(set(keys)),
        "top_answer": _short(top[0], 120) if top else None,
        "top_count": top[1] if top else 0,
    }


def _flips(
    scores: Mapping[str, Scores],
    usable: Sequence[int],
    references: Sequence[str],
    predictions: Mapping[str, Sequence[str]],
    prompts: Sequence[str] | None,
    finetuned: str,
    best: str | None,
    primary: str,
    limit: int,
) -> dict[str, Any]:
    rules = {
        "numeric": "right = within 10% of the reference",
        "json": "right = every field right",
        "label": "right = the right label",
        "text": "right = token F1 of at least 0.5",
    }
    ft = scores.get(finetuned)
    empty: dict[str, Any] = {"rule": "", "fixed": [], "broken": [], "fixed_count": 0, "broken_count": 0}
    if ft is None or best is None:
        return empty
    base = scores[best]
    sign = -1.0 if primary in LOWER_IS_BETTER else 1.0
    fixed: list[tuple[float, int]] = []
    broken: list[tuple[float, int]] = []
    for j, (was, now) in enumerate(zip(base.correct, ft.correct, strict=True)):
        gain = sign * (ft.per_example[primary][j] - base.per_example[primary][j])
        if now and not was:
            fixed.append((-gain, j))
        elif was and not now:
            broken.append((gain, j))

    def entry(j: int) -> dict[str, Any]:
        i = usable[j]
        return {
            "index": i,
            "prompt": _short(prompts[i]) if prompts is not None else None,
            "reference": _short(references[i]),
            "baseline": _short(predictions[best][i]),
            "finetuned": _short(predictions[finetuned][i]),
            "baseline_score": base.per_example[primary][j],
            "finetuned_score": ft.per_example[primary][j],
        }

    return {
        "rule": rules[ft.task],
        "fixed": [entry(j) for _, j in sorted(fixed)[:limit]],
        "broken": [entry(j) for _, j in sorted(broken)[:limit]],
        "fixed_count": len(fixed),
        "broken_count": len(broken),
    }


def _flags(
    report: Mapping[str, Any],
    scores: Mapping[str, Scores],
    finetuned: str,
    min_examples: int,
    finetuned_answers: Sequence[str],
    references: Sequence[str],
) -> list[dict[str, str]]:
    flags: list[dict[str, str]] = []
    n, task, primary = report["n"], report["task"], report["metric"]

    def add(code: str, message: str) -> None:
        flags.append({"code": code, "message": message})

    if n == 0:
        add("empty_eval", "There were no eval examples to score, so nothing can be concluded.")
    elif n < MIN_EXAMPLES_FOR_VERDICT:
        add(
            "too_small_to_tell",
            f"Only {n} eval examples: far too few to tell whether fine-tuning helped. "
            f"Use at least {min_examples} (more is better).",
        )
    elif n < min_examples:
        add(
            "small_eval_set",
            f"Only {n} eval examples: differences may be chance. "
            f"Use at least {min_examples} for a verdict you can lean on.",
        )
    if report["skipped"]:
        add(
            "unscorable_references",
            f"{report['skipped']} eval examples had a reference answer that is not "
            f"a valid {'number' if task == 'numeric' else 'JSON object'} and were left out.",
        )

    guess = report.get("guess")
    beats = report.get("beats_constant") or {}
    guess_value = guess["metrics"].get(primary) if guess else None
    losers = [name for name in scores if name != finetuned and beats.get(name) is False]
    if guess and losers:
        verb = "is" if len(losers) == 1 else "are"
        add(
            "baseline_no_better_than_guessing",
            f"{_upper_first(_join([_model_with_value(report, name, report['baseline'][name]) for name in losers]))} "
            f"{verb} no better than {_constant_phrase(report)}: prompting the base model does not do this "
            "task yet.",
        )

    ft = scores.get(finetuned)
    best = report["best_baseline"]
    if ft is None or best is None or n == 0:
        return flags
    base = scores[best]
    fm, bm = ft.metrics, base.metrics
    base_phrase = _MODEL_PHRASES.get(best, best)

    if task == "numeric" and None not in (fm["max_ae"], bm["max_ae"], fm["mae"], bm["mae"]):
        if fm["max_ae"] < bm["max_ae"] and fm["mae"] > bm["mae"]:
            add(
                "worst_case_better_average_worse",
                f"The fine-tune's worst error is smaller ({format_metric('max_ae', fm['max_ae'])} vs "
                f"{format_metric('max_ae', bm['max_ae'])}) but its average error is larger ({format_metric('mae', fm['mae'])} vs "
                f"{format_metric('mae', bm['mae'])}): fixing outliers is not a better average.",
            )
        elif fm["max_ae"] > bm["max_ae"] and fm["mae"] < bm["mae"]:
            add(
                "average_better_worst_case_worse",
                f"The fine-tune's average error is smaller ({format_metric('mae', fm['mae'])} vs {format_metric('mae', bm['mae'])}) "
                f"but its worst error is larger ({format_metric('max_ae', fm['max_ae'])} vs {format_metric('max_ae', bm['max_ae'])}): "
                "check the worst cases before relying on it.",
            )

    fmt = FORMAT_METRIC[task]
    if fmt is not None and fm.get(fmt) is not None and bm.get(fmt) is not None:
        what = {
            "parse_rate": "a number",
            "valid_rate": "a valid JSON object" if task == "json" else "a known label",
        }[fmt]
        if fm[fmt] < FORMAT_FLAG_BELOW:
            add(
                "finetuned_format",
                f"Only {_pct(fm[fmt])} of the fine-tuned model's answers were {what}; "
                "the rest counted as wrong.",
            )
        if fm[fmt] - bm[fmt] >= 0.1:
            message = (
                f"The fine-tune answers with {what} far more often than {base_phrase} "
                f"({_pct(fm[fmt])} vs {_pct(bm[fmt])})."
            )
            if (
                task == "numeric"
                and fm["mae_parsed"] is not None
                and bm["mae_parsed"] is not None
                and fm["mae_parsed"] >= bm["mae_parsed"]
            ):
                message += (
                    f" But counting only answers that were numbers, the fine-tune was not closer "
                    f"(average error "
                    f"{format_metric('mae', fm['mae_parsed'])} vs {format_metric('mae', bm['mae_parsed'])}): "
                    "the gain is format, not accuracy."
                )
            add("format_improved", message)
        elif bm[fmt] - fm[fmt] >= 0.1:
            add(
                "format_worse",
                f"The fine-tune answers with {what} less often than {base_phrase} "
                f"({_pct(fm[fmt])} vs {_pct(bm[fmt])}).",
            )

    if guess and beats.get(finetuned) is False:
        add(
            "no_better_than_guessing",
            f"{_upper_first(_model_with_value(report, finetuned, fm))} is no better than "
            f"{_constant_phrase(report)}: it has not learned the task.",
        )

    same = _same_answer(finetuned_answers)
    if same is not None and len(finetuned_answers) >= 5:
        answer, count = same
        refs_same = _same_answer(references)
        refs_share = refs_same[1] / len(references) if refs_same and references else 0.0
        # Only odd when the right answers vary: a label set that is 90% one class is another story.
        if count >= 0.8 * len(finetuned_answers) and refs_share < 0.5:
            add(
                "same_answer",
                f"The fine-tuned model gave the same answer ({_short(answer, 60)!r}) to {count} of "
                f"{len(finetuned_answers)} examples, whatever the question: it learned the answer's form, "
                "not the task.",
            )

    few = scores.get("few_shot")
    zero = scores.get("zero_shot")
    if (
        report["verdict"] in ("no_significant_difference", "worse")
        and few is not None
        and zero is not None
        and best == "few_shot"
        and _better(primary, few.metrics.get(primary), zero.metrics.get(primary))
        and beats.get("few_shot", guess_value is None)  # never recommend what a constant answer beats
    ):
        few_value, ft_value = few.metrics.get(primary), fm.get(primary)
        if report["verdict"] == "no_significant_difference" and _better(primary, ft_value, few_value):
            # The fine-tune scored higher, but not by more than chance: say exactly that.
            message = (
                f"Putting a few examples in the prompt comes close ({METRIC_NAMES.get(primary, primary)} "
                f"{format_metric(primary, few_value)} vs {format_metric(primary, ft_value)} for the fine-tune), "
                "and the difference could be chance: prompting may be enough here. More eval examples "
                "would tell."
            )
        else:
            message = (
                "Putting a few examples in the prompt already does as well as or better "
                "than fine-tuning here: consider using prompting instead."
            )
        add("prompting_is_enough", message)
    return flags


def _same_answer(answers: Sequence[str]) -> tuple[str, int] | None:
    """The most common answer (ignoring case and surrounding spaces) and how often it appears."""
    counts: dict[str, int] = {}
    shown: dict[str, str] = {}
    for answer in answers:
        key = " ".join((answer or "").casefold().split())
        counts[key] = counts.get(key, 0) + 1
        shown.setdefault(key, answer or "")
    if not counts:
        return None
    key = max(counts, key=lambda k: (counts[k], k))
    return shown[key], counts[key]


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def format_metric(metric: str, value: Any) -> str:
    """A metric value for people: shares as percentages, errors with sensible precision."""
    if value is None:
        return "-"
    if metric in _RATE_METRICS:
        return _pct(value)
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.3g}"


def format_difference(metric: str, value: float, *, like: float | None = None) -> str:
    """A signed change in ``metric`` for people ("+3.3 points", "-12.5"). ``like``: format with
    the precision a value of that size gets, so both ends of an interval read alike."""
    if metric in _RATE_METRICS:
        return f"{100 * value:+.1f} points"
    size = abs(like) if like is not None else abs(value)
    if size >= 1000:
        text = f"{abs(value):,.0f}"
    elif size >= 10:
        text = f"{abs(value):,.1f}"
    elif size >= 0.01 or size == 0:
        text = f"{abs(value):.2f}"
    else:
        text = f"{abs(value):.3g}"
    return ("-" if value < 0 else "+") + text


def format_interval(metric: str, low: float, high: float) -> str:
    """Both ends of an interval, with one precision: "-49.7 to -8.9"."""
    size = max(abs(low), abs(high))
    return f"{format_difference(metric, low, like=size)} to {format_difference(metric, high, like=size)}"


_FORMAT_SHARES: dict[str, str] = {
    "numeric": "numbers in {} of answers",
    "json": "valid JSON in {} of answers",
    "label": "a known label in {} of answers",
}


def format_note(report: Mapping[str, Any], metrics: Mapping[str, Any] | None) -> str:
    """The task's format rate in words (see :data:`FORMAT_METRIC`), e.g. "numbers in 85% of
    answers", when a model's answers were not all in the right format; else "" (also for free
    text). A rate just below 1 shows as 99%, never as a misleading 100%."""
    fmt = FORMAT_METRIC.get(report.get("task") or "")
    rate = (metrics or {}).get(fmt) if fmt else None
    if not isinstance(rate, int | float) or rate >= 1:
        return ""
    shown = f"{min(99, round(100 * rate))}%" if rate > 0 else "0%"
    return _FORMAT_SHARES[report["task"]].format(shown)


def _value_phrase(report: Mapping[str, Any], metrics: Mapping[str, Any] | None) -> str:
    """The primary metric's value, with the format rate beside it when below 100%:
    "131.9 (numbers in 85% of answers)"."""
    metric = report["metric"]
    note = format_note(report, metrics)
    value = format_metric(metric, (metrics or {}).get(metric))
    return f"{value} ({note})" if note else value


def _model_with_value(report: Mapping[str, Any], name: str, metrics: Mapping[str, Any] | None) -> str:
    """A model with its value, e.g. "the base model on its own (average error 3,746, numbers in 0%
    of answers)"."""
    metric = report["metric"]
    parts = [f"{METRIC_NAMES.get(metric, metric)} {format_metric(metric, (metrics or {}).get(metric))}"]
    if format_note(report, metrics):
        parts.append(format_note(report, metrics))
    return f"{_MODEL_PHRASES.get(name, name)} ({', '.join(parts)})"


def _constant_phrase(report: Mapping[str, Any]) -> str:
    """The constant answer with its value, e.g. "always answering '111.99', the median reference
    value (average error 122.8)"."""
    guess = report["guess"]
    metric = report["metric"]
    rule = guess.get("rule")
    return (
        f"always answering {_short(guess['answer'], 60)!r}"
        + (f", {rule}" if rule else "")
        + f" ({METRIC_NAMES.get(metric, metric)} {format_metric(metric, guess['metrics'].get(metric))})"
    )


def _upper_first(text: str) -> str:
    """``text`` with its first letter upper-cased (``str.capitalize`` would lower the rest)."""
    return text[:1].upper() + text[1:]


def _join(items: Sequence[str]) -> str:
    """Items in words: "a", "a and b", "a, b and c"."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _constant_verdict(report: Mapping[str, Any], names: Sequence[str]) -> str:
    """What the verdict sentence adds about the constant answer for the models ``names`` (those
    it talks about): "" when each of them beats it (or there is none)."""
    beats = report.get("beats_constant") or {}
    if not report.get("guess") or not beats:
        return ""
    if not any(beats.values()):
        return (
            f" None of the models beats {_constant_phrase(report)}, so none of them is worth using "
            "for this task yet."
        )
    losers = [name for name in names if beats.get(name) is False]
    if not losers:
        return ""
    who = _upper_first(_join([_MODEL_PHRASES.get(name, name) for name in losers]))
    return f" {who} {'is' if len(losers) == 1 else 'are'} no better than {_constant_phrase(report)}."


def verdict_sentence(report: Mapping[str, Any]) -> str:
    """The verdict in plain words, for a non-expert.

    It states the verdict (fine-tuned against the better baseline, with the confidence range) and
    each model's format rate beside its value when below 100%, and it never presents as good a
    model that the constant answer (:func:`know_nothing_guess`) beats: "Fine-tuning helped" only
    when the fine-tune also beats the constant answer, "keep using" a baseline only when that
    baseline beats it, and "None of the models beats always answering ..." when none does.
    """
    metric = report["metric"]
    verdict = report.get("verdict")
    ft = report.get("finetuned")
    best = report.get("best_baseline")
    name = METRIC_NAMES.get(metric, metric)
    if ft is None:
        if best is None:
            return "No results yet."
        parts = [
            f"{MODEL_LABELS.get(model, model)}: {name} {_value_phrase(report, m)}"
            for model, m in report["baseline"].items()
        ]
        return (
            "Baseline measured ("
            + "; ".join(parts)
            + "); the fine-tune is not evaluated yet."
            + _constant_verdict(report, list(report["baseline"]))
        )
    if best is None:
        return (
            f"The fine-tuned model scored {name} {_value_phrase(report, ft)}, with no baseline to compare "
            "against." + _constant_verdict(report, ["finetuned"])
        )
    base = report["baseline"][best]
    base_phrase = _MODEL_PHRASES.get(best, best)
    direction = "lower is better" if not report["higher_is_better"] else "higher is better"
    values = (
        f"{name} {_value_phrase(report, ft)} for the fine-tuned model vs "
        f"{_value_phrase(report, base)} for {base_phrase} ({direction})"
    )
    beats = report.get("beats_constant") or {}
    tail = _constant_verdict(report, ["finetuned", best])
    interval = report.get("interval")
    if report["n"] < MIN_EXAMPLES_FOR_VERDICT:
        return f"Too few eval examples ({report['n']}) to tell whether fine-tuning helped: {values}.{tail}"
    span = ""
    if interval is not None:
        span = (
            f"{round(interval['confidence'] * 100)}% confidence range for the change: "
            f"{format_interval(metric, interval['low'], interval['high'])}"
        )
    if verdict == "improved":
        if beats.get("finetuned") is False:
            return f"The fine-tuned model did better than {base_phrase}: {values}; {span}.{tail}"
        return f"Fine-tuning helped: {values}; {span}, so the gain is unlikely to be chance."
    if verdict == "worse":
        if beats.get(best) is False:
            return f"Fine-tuning made things worse: {values}; {span}.{tail}"
        return f"Fine-tuning made things worse: {values}; {span}, so keep using {base_phrase}."
    if interval is not None and interval["low"] == interval["high"] == 0:
        return (
            f"No difference: the fine-tuned model and {base_phrase} scored the same on "
            f"every example ({name} {_value_phrase(report, ft)}).{tail}"
        )
    if interval is not None and (interval["low"] > 0 or interval["high"] < 0):
        return (
            f"No meaningful difference: {values}; the change, "
            f"{format_difference(metric, interval['mean_difference'])}, is smaller than the smallest "
            f"change that matters here ({format_difference(metric, interval.get('min_effect') or 0.0)[1:]})."
            f"{tail}"
        )
    return (
        f"No clear difference: {values}; {span}, which includes no change, so the difference could be "
        f"chance.{tail}"
    )


def _table(report: Mapping[str, Any]) -> tuple[list[str], list[str], list[tuple[str, list[str]]]]:
    """The results table both renderings share: ``(metric columns, headers, rows)``; each row is
    ``(label, cells)``. The constant answer comes first, the fine-tune last; the last column says
    whether each model beats the constant answer ("yes"/"NO"; "-" without one)."""
    task, primary = report["task"], report["metric"]
    columns = [primary] + [m for m in TASK_METRICS[task] if m != primary]
    rows: list[tuple[str, Mapping[str, Any]]] = list(report["baseline"].items())
    guess = report.get("guess")
    if guess:
        rows.insert(0, ("guess", guess["metrics"]))
    if report.get("finetuned") is not None:
        rows.append(("finetuned", report["finetuned"]))
    labels = dict(MODEL_LABELS)
    if guess:
        labels["guess"] = f"Always {_short(guess['answer'], 24)!r} (constant answer, no model)"
    if isinstance(report.get("k"), int):
        labels["few_shot"] = f"Base model + {report['k']} examples (few-shot)"
    beats = report.get("beats_constant") or {}
    heads = [_SHORT_NAMES.get(m, m) for m in columns]
    if beats:
        heads.append("beats constant")
    out: list[tuple[str, list[str]]] = []
    for name, metrics in rows:
        cells = [format_metric(m, metrics.get(m)) for m in columns]
        if beats:
            cells.append("" if name == "guess" else {True: "yes", False: "NO"}.get(beats.get(name), "-"))
        out.append((labels.get(name, name), cells))
    return columns, heads, out


def render_text(report: Mapping[str, Any]) -> str:
    """A plain-text rendering: the table (with the constant-answer row and the format rates),
    the verdict sentence, flags, flips and how answers were scored."""
    task, primary = report["task"], report["metric"]
    _, heads, rows = _table(report)
    label_width = max([len("Model")] + [len(label) for label, _ in rows])
    widths = [max([len(h)] + [len(cells[k]) for _, cells in rows]) for k, h in enumerate(heads)]
    direction = "lower is better" if not report["higher_is_better"] else "higher is better"
    lines = [
        f"Task: {task} · primary metric: {METRIC_NAMES.get(primary, primary)} ({direction}) · "
        f"{report['n']} eval examples",
        "",
        "  ".join(["Model".ljust(label_width)] + [h.rjust(w) for h, w in zip(heads, widths, strict=True)]),
    ]
    for label, cells in rows:
        lines.append(
            "  ".join([label.ljust(label_width)] + [c.rjust(w) for c, w in zip(cells, widths, strict=True)])
        )
    lines += ["", "Verdict: " + report.get("summary", verdict_sentence(report))]
    if report["flags"]:
        lines += ["", "Notes:"] + [f"- {f['message']}" for f in report["flags"]]
    flips = report["flips"]
    best = report.get("best_baseline")
    for key, title in (("fixed", "Fixed by the fine-tune"), ("broken", "Broken by the fine-tune")):
        if not flips[key]:
            continue
        lines += ["", f"{title} ({len(flips[key])} of {flips[f'{key}_count']}; {flips['rule']}):"]
        for item in flips[key]:
            head = f"  #{item['index'] + 1}"
            if item.get("prompt"):
                head += f" {_short(item['prompt'], 80)!r}"
            lines.append(head)
            lines.append(
                f"    expected {_short(item['reference'], 100)!r}; "
                f"{_SHORT_MODEL.get(best or '', best)} said {_short(item['baseline'], 100)!r}; "
                f"fine-tuned said {_short(item['finetuned'], 100)!r}"
            )
    lines += ["", "How answers were scored: " + scoring_text(report)]
    return "\n".join(lines)


def scoring_text(report: Mapping[str, Any]) -> str:
    """The report's scoring note plus how its constant answer was chosen."""
    text = str(report.get("scoring") or "")
    guess = report.get("guess")
    if guess:
        text += (
            f" The constant answer, {_short(guess['answer'], 60)!r}, is {guess.get('rule') or 'a typical answer'}"
            ", taken from the eval references themselves (which flatters it): a model that does not beat "
            "it by the smallest change that matters has not learned the task."
        )
    return text


#: The name ``engine`` exports (``render_text`` is too generic at the package level).
render_report = render_text


def _md_code(text: Any, limit: int = 200) -> str:
    """``text`` as inline code on one line (a backtick inside gets a longer fence)."""
    body = " ".join(_short(str(text if text is not None else ""), limit).split()) or " "
    fence = "``" if "`" in body else "`"
    return f"{fence} {body} {fence}" if fence == "``" else f"`{body}`"


def _md_text(text: Any) -> str:
    """Plain text for a Markdown paragraph or table cell: no line breaks, ``|`` and markup
    characters escaped so that answers cannot break the table or become links."""
    body = " ".join(str(text if text is not None else "").split())
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", body)


def render_markdown(
    report: Mapping[str, Any],
    *,
    job_id: str | None = None,
    base_model: str | None = None,
    dataset: str | None = None,
    promotion: Mapping[str, Any] | None = None,
    charts: Mapping[str, str] | None = None,
) -> str:
    """The report as a Markdown page (``report.md`` in the job's run directory), for people.

    Sections: a title with ``job_id``; what was compared (``base_model``, ``dataset``, task,
    primary metric and direction, eval examples); the verdict sentence; the results table (the
    constant-answer row first, every task metric including the format rate, and whether each
    model beats the constant answer); notes (the report's flags); the promotion decision and its
    reasons (``promotion``: ``{"promoted": bool, "message": str, "reasons": [str]}``, as
    ``finish_evaluation`` records it; when absent, :func:`promotion_decision` of the report);
    examples the fine-tune fixed and broke; the charts (``charts``: file name relative to the
    page -> caption, only files that exist); how answers were scored. Pure: no file access.
    """
    task, primary = report["task"], report["metric"]
    direction = "lower is better" if not report["higher_is_better"] else "higher is better"
    title = "Fine-tuning report" + (f": job {job_id}" if job_id else "")
    lines = [f"# {_md_text(title)}", ""]
    facts = []
    if base_model:
        facts.append(f"- Base model: {_md_code(base_model)}")
    if dataset:
        facts.append(f"- Dataset: {_md_code(dataset)}")
    facts.append(
        f"- Task: {task}; primary metric: {METRIC_NAMES.get(primary, primary)} (`{primary}`, {direction})"
    )
    held = f"- Eval examples: {report['n']}"
    if report.get("skipped"):
        held += f" ({report['skipped']} more left out: their reference answer could not be scored)"
    facts.append(held)
    verdict = report.get("verdict")
    if verdict:
        best = report.get("best_baseline")
        facts.append(
            f"- Verdict: **{verdict}** (the fine-tuned model against {_MODEL_PHRASES.get(best, best)}, "
            "the better baseline)"
        )
    lines += [*facts, "", "## Verdict", "", _md_text(report.get("summary") or verdict_sentence(report)), ""]

    _, heads, rows = _table(report)
    lines += ["## Results", ""]
    lines.append("| Model | " + " | ".join(_md_text(h) for h in heads) + " |")
    lines.append("|---|" + "---:|" * len(heads))
    for label, cells in rows:
        lines.append("| " + _md_text(label) + " | " + " | ".join(_md_text(c) for c in cells) + " |")
    lines.append("")

    if report.get("flags"):
        lines += ["## Notes", ""] + [f"- {_md_text(f.get('message'))}" for f in report["flags"]] + [""]

    if report.get("finetuned") is not None:
        lines += ["## Promotion", ""]
        if promotion is None:
            ok, reasons = promotion_decision(report)
            promotion = {"promoted": ok, "reasons": reasons}
        promoted = bool(promotion.get("promoted"))
        lines.append(
            "**The fine-tuned model became this channel's default model.**"
            if promoted
            else "**The fine-tuned model was NOT made this channel's default model.**"
        )
        reasons = list(promotion.get("reasons") or [])
        if reasons:  # the rule refused it: the reasons, one per line (the message says the same)
            lines += ["", "Why not:"] + [f"- {_md_text(_upper_first(r))}" for r in reasons]
            if promotion.get("model_id"):
                lines += ["", f"You can still try it with {_md_code('model=' + str(promotion['model_id']))}."]
        elif promotion.get("message"):  # promoted, or held back by a user's choice
            lines += ["", _md_text(promotion["message"])]
        lines.append("")

    flips = report.get("flips") or {}
    best = report.get("best_baseline")
    for key, heading in (("fixed", "Fixed by the fine-tune"), ("broken", "Broken by the fine-tune")):
        if not flips.get(key):
            continue
        lines += [
            f"## {heading}",
            "",
            f"{len(flips[key])} of {flips[f'{key}_count']} shown; {_md_text(flips.get('rule'))}.",
            "",
        ]
        for item in flips[key]:
            prompt = f" {_md_code(item['prompt'], 120)}" if item.get("prompt") else ""
            lines.append(
                f"- #{item['index'] + 1}{prompt}: expected {_md_code(item['reference'], 100)}; "
                f"{_SHORT_MODEL.get(best or '', best)} said {_md_code(item['baseline'], 100)}; "
                f"fine-tuned said {_md_code(item['finetuned'], 100)}"
            )
        lines.append("")

    if charts:
        lines += ["## Charts", ""]
        for name, caption in charts.items():
            lines += [f"![{_md_text(caption)}]({name})", ""]

    lines += ["## How answers were scored", "", _md_text(scoring_text(report)), ""]
    return "\n".join(lines)
