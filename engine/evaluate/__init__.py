"""Evaluation: task detection, metrics by task, a paired bootstrap verdict, flips and the report.

The package: :mod:`~engine.evaluate.names` (tasks, metrics, labels, limits),
:mod:`~engine.evaluate.answers` (task detection, reading answers), :mod:`~engine.evaluate.scoring`
(metrics per task), :mod:`~engine.evaluate.verdict` (bootstrap, smallest change, promotion),
:mod:`~engine.evaluate.guess` (the constant answer), :mod:`~engine.evaluate.flags` (flags, flips),
:mod:`~engine.evaluate.report` (:func:`build_report`), :mod:`~engine.evaluate.formatting` (numbers
and sentences), :mod:`~engine.evaluate.render` (text and Markdown). Every name is re-exported here.

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

from engine.evaluate.answers import (
    CURRENCY_CODES,
    CURRENCY_SYMBOLS,
    CURRENCY_WORDS,
    DETECT_THRESHOLD,
    HEDGES,
    KNOWN_UNITS,
    LABEL_MAX_DISTINCT,
    LABEL_MAX_WORDS,
    SENTENCE_MAX_CHARS,
    SENTENCE_MAX_WORDS,
    detect_task,
    is_strict_number,
    label_key,
    match_label,
    parse_json_object,
    parse_number,
    reference_number,
    reference_units,
    resolve_task,
    text_tokens,
)
from engine.evaluate.formatting import (
    format_difference,
    format_interval,
    format_metric,
    format_note,
    verdict_sentence,
)
from engine.evaluate.guess import (
    CONSTANT_RULES,
    TEXT_MEDOID_CANDIDATES,
    answer_stats,
    beats_constant,
    know_nothing_guess,
)
from engine.evaluate.names import (
    FORMAT_FLAG_BELOW,
    FORMAT_METRIC,
    LOWER_IS_BETTER,
    METRIC_NAMES,
    MIN_EXAMPLES,
    MIN_EXAMPLES_FOR_VERDICT,
    MODEL_LABELS,
    PER_EXAMPLE_METRICS,
    PRIMARY_METRIC,
    TASK_METRICS,
    TASKS,
    VERDICTS,
)
from engine.evaluate.render import (
    render_markdown,
    render_report,
    render_text,
    scoring_text,
)
from engine.evaluate.report import (
    build_report,
    scoring_note,
)
from engine.evaluate.scoring import (
    Scores,
    compute_metrics,
    lcs_length,
    numeric_zero_cost,
    percentile,
    rouge_l,
    score,
    score_json,
    score_label,
    score_numeric,
    score_text,
    token_f1,
)
from engine.evaluate.verdict import (
    MIN_EFFECT_RELATIVE,
    MIN_EFFECT_SHARE,
    Interval,
    decide,
    min_effect,
    paired_bootstrap,
    promotion_decision,
    should_promote,
)

__all__ = [
    "CONSTANT_RULES",
    "CURRENCY_CODES",
    "CURRENCY_SYMBOLS",
    "CURRENCY_WORDS",
    "DETECT_THRESHOLD",
    "FORMAT_FLAG_BELOW",
    "FORMAT_METRIC",
    "HEDGES",
    "KNOWN_UNITS",
    "LABEL_MAX_DISTINCT",
    "LABEL_MAX_WORDS",
    "LOWER_IS_BETTER",
    "METRIC_NAMES",
    "MIN_EFFECT_RELATIVE",
    "MIN_EFFECT_SHARE",
    "MIN_EXAMPLES",
    "MIN_EXAMPLES_FOR_VERDICT",
    "MODEL_LABELS",
    "PER_EXAMPLE_METRICS",
    "PRIMARY_METRIC",
    "SENTENCE_MAX_CHARS",
    "SENTENCE_MAX_WORDS",
    "TASKS",
    "TASK_METRICS",
    "TEXT_MEDOID_CANDIDATES",
    "VERDICTS",
    "Interval",
    "Scores",
    "answer_stats",
    "beats_constant",
    "build_report",
    "compute_metrics",
    "decide",
    "detect_task",
    "format_difference",
    "format_interval",
    "format_metric",
    "format_note",
    "is_strict_number",
    "know_nothing_guess",
    "label_key",
    "lcs_length",
    "match_label",
    "min_effect",
    "numeric_zero_cost",
    "paired_bootstrap",
    "parse_json_object",
    "parse_number",
    "percentile",
    "promotion_decision",
    "reference_number",
    "reference_units",
    "render_markdown",
    "render_report",
    "render_text",
    "resolve_task",
    "rouge_l",
    "score",
    "score_json",
    "score_label",
    "score_numeric",
    "score_text",
    "scoring_note",
    "scoring_text",
    "should_promote",
    "text_tokens",
    "token_f1",
    "verdict_sentence",
]
