"""Task detection and reading answers: numbers, JSON objects, labels and text tokens."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Sequence
from typing import Any

from engine.errors import UsageError
from engine.evaluate.names import PER_EXAMPLE_METRICS, PRIMARY_METRIC, TASKS

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
