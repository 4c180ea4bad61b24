"""Prompts for evaluation: the eval prompt and reference of an example, few-shot prompts, and the
generation length. Pure: stdlib only.

A chat example is a list of message dicts (``{"role": ..., "content": ...}``, OpenAI chat format).
Its **eval prompt** is every message before its last assistant turn; its **reference** is that
turn's content. The model is asked the eval prompt and its answer is compared with the reference.

**Few-shot** prompts keep the example's system prompt, then replay k training examples as earlier
user/assistant turns, then the real question::

    system (from the eval example, if any)
    user: <shot 1 question>      assistant: <shot 1 answer>
    ...
    user: <shot k question>      assistant: <shot k answer>
    user: <the eval question>

The same k shots serve every eval example (one fixed prompt prefix: fair and cheap). They come only
from the training split, chosen deterministically (seeded), preferring distinct answers so a label
task does not show three examples of the same class, and never an example whose prompt also appears
in the eval split. k is the largest number up to ``k_max`` (default 5) whose prompt, for the
longest eval prompt, still leaves room for the answer in the model's context.

Token counts come from an injected ``token_counter(messages) -> int`` (the same callable the
dataset validator uses, built from the base model's tokenizer), so this module never loads one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from engine.errors import UsageError
from engine.messages import message_text
from engine.messages import prompt_key as _prompt_key

Message = Mapping[str, Any]
TokenCounter = Callable[[list[dict[str, Any]]], int]

DEFAULT_K_MAX = 5
#: Added to the longest reference answer's token count: a share of it, and at least a few tokens.
MARGIN_FRACTION = 0.25
MARGIN_MIN_TOKENS = 8
#: select_shots gives up after this many candidates that do not fit.
MAX_MISSES = 30


def _last_assistant(messages: Sequence[Message]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "assistant":
            return i
    raise UsageError(
        "This example has no assistant message, so there is no reference answer to compare with."
    )


def split_example(messages: Sequence[Message]) -> tuple[list[dict[str, Any]], str]:
    """``(eval_prompt, reference)``: the messages before the last assistant turn, and its content.

    Raises :class:`UsageError` when there is no assistant turn or nothing before it. A reference
    without text content (e.g. only tool calls) is the empty string; content parts give their text
    (:func:`engine.messages.message_text`).
    """
    i = _last_assistant(messages)
    if i == 0:
        raise UsageError("This example starts with the assistant's answer: there is no question to ask.")
    return [dict(m) for m in messages[:i]], message_text(messages[i].get("content"))


def eval_prompt(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The messages a model is asked: everything before the last assistant turn."""
    return split_example(messages)[0]


def reference(messages: Sequence[Message]) -> str:
    """The expected answer: the content of the last assistant turn."""
    return split_example(messages)[1]


def prompt_text(prompt: Sequence[Message]) -> str:
    """The last user message of a prompt (for reports and the predictions file), else its last message."""
    for message in reversed(prompt):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return str(prompt[-1].get("content", "")) if prompt else ""


def prompt_key(prompt: Sequence[Message]) -> str:
    """The key of a prompt's non-system messages (to keep eval prompts out of the shots): "same
    prompt" as :func:`engine.messages.prompt_key` defines it, system messages left out."""
    return _prompt_key(prompt, system=False)


def _turns(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """A training example as demonstration turns: its messages up to and including the last
    assistant turn, without the system prompt."""
    end = _last_assistant(messages)
    return [dict(m) for m in messages[: end + 1] if m.get("role") != "system"]


def few_shot_prompt(prompt: Sequence[Message], shots: Sequence[Sequence[Message]]) -> list[dict[str, Any]]:
    """The eval ``prompt`` with ``shots`` (training examples) replayed as earlier turns, after the
    prompt's system message(s)."""
    system = [dict(m) for m in prompt if m.get("role") == "system"]
    rest = [dict(m) for m in prompt if m.get("role") != "system"]
    demo: list[dict[str, Any]] = []
    for shot in shots:
        demo.extend(_turns(shot))
    return system + demo + rest


def select_shots(
    train: Sequence[Sequence[Message]],
    *,
    eval_prompts: Sequence[Sequence[Message]],
    token_counter: TokenCounter,
    context_tokens: int,
    max_new_tokens: int,
    k_max: int = DEFAULT_K_MAX,
    seed: int = 0,
) -> list[list[dict[str, Any]]]:
    """Up to ``k_max`` training examples for few-shot prompts (see the module docstring).

    The result fits: for the longest eval prompt (by ``token_counter``),
    ``token_counter(few_shot_prompt(prompt, shots)) + max_new_tokens <= context_tokens``. It may
    hold fewer than ``k_max`` shots (even none) when the context is small or examples are long;
    callers report ``len(shots)``. Never returns a training example whose prompt is an eval prompt.
    """
    if k_max < 0 or context_tokens <= 0 or max_new_tokens < 0:
        raise ValueError("k_max and max_new_tokens must be >= 0, context_tokens > 0")
    banned = {prompt_key(p) for p in eval_prompts}
    candidates: list[list[dict[str, Any]]] = []
    for example in train:
        try:
            prompt, answer = split_example(example)
        except UsageError:
            continue
        if prompt_key(prompt) in banned or not answer.strip():
            continue
        candidates.append([dict(m) for m in example])
    if not candidates or k_max == 0:
        return []
    longest = max(eval_prompts, key=lambda p: token_counter(list(p)), default=[])
    budget = context_tokens - max_new_tokens

    def fits(shots: list[list[dict[str, Any]]]) -> bool:
        return token_counter(few_shot_prompt(longest, shots)) <= budget

    order = list(range(len(candidates)))
    random.Random(seed).shuffle(order)
    # Prefer shots whose answers differ: first one per distinct answer, then the rest.
    seen: set[str] = set()
    first, later = [], []
    for i in order:
        answer = reference(candidates[i]).strip().casefold()
        (later if answer in seen else first).append(i)
        seen.add(answer)
    chosen: list[list[dict[str, Any]]] = []
    misses = 0
    for i in first + later:
        # Bounded work: each try tokenizes a whole prompt, and a big training set of long
        # examples would otherwise be tried one by one.
        if len(chosen) == k_max or misses >= MAX_MISSES:
            break
        trial = [*chosen, candidates[i]]
        if fits(trial):
            chosen = trial
        else:
            misses += 1
    return chosen


def max_new_tokens(
    references: Sequence[str],
    token_counter: TokenCounter,
    *,
    margin_fraction: float = MARGIN_FRACTION,
    margin_min: int = MARGIN_MIN_TOKENS,
    cap: int | None = None,
) -> int:
    """How many tokens to generate: the longest reference (as an assistant message, counted by
    ``token_counter``) plus ``max(margin_min, margin_fraction * longest)``, at most ``cap``.

    The margin lets a model that answers a little more verbosely still finish; greedy decoding
    stops at end-of-sequence anyway, so the margin only costs time on models that ramble.
    """
    longest = max((token_counter([{"role": "assistant", "content": r}]) for r in references), default=0)
    total = longest + max(margin_min, math.ceil(margin_fraction * longest))
    return min(total, cap) if cap is not None else total
