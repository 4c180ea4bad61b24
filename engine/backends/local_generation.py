"""Batched generation with a local model (a base, or a base with its active LoRA adapter).

:func:`generate_batch` / :func:`generate_detailed` are the stateless entry points for evaluation
(the worker's baselines and the fine-tuned model): chat template with the generation prompt, LEFT
padding, one ``generate`` call per batch, greedy unless ``temperature > 0``, stops at EOS or a
known end-of-turn marker, answers without template tokens. :func:`generate_one_batch` is the
single ``generate`` call the model server (``local_serving``) batches its requests into.

Safety: every row has a max-token limit and may have a wall-clock deadline (a per-row stopping
criterion reading an injectable clock). :class:`Answer` is what one request gets back (also for
OpenAI models, ``engine.openai_pipeline``); an answer cut short carries :func:`cut_note`.

torch/transformers are imported inside functions (see ARCHITECTURE.md's import rules), so
importing this module is cheap.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from engine.backends.local_model import Message, context_length, pad_with_eos, render_prompt
from engine.errors import FtbotError, ResourceExhausted, UsageError

# "content_filter" and "interrupted" (the stream broke off) only come from OpenAI (engine/openai_pipeline.py answers with the same Answer).
FinishReason = Literal["stop", "length", "time", "context", "content_filter", "interrupted"]

# End-of-turn markers of common chat templates. Generation stops at any that the vocabulary has,
# besides the tokenizer's and the generation config's EOS: instruct models often end a turn with
# one of these rather than with EOS.
_END_OF_TURN_TOKENS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Generation:
    """One generated answer. ``tokens`` counts the answer's tokens (without the stop token)."""

    text: str
    tokens: int
    finish_reason: FinishReason


@dataclass(frozen=True)
class Answer:
    """What the server returns for one request.

    ``model`` is the caller's label for the model (a registry id, or ``base:<name>``);
    ``adapter`` is the adapter directory or None for the base model itself. ``finish_reason`` is
    ``stop`` (EOS), ``length`` (max new tokens), ``time`` (wall-clock limit) or ``context`` (the
    model's context length), or for OpenAI models ``content_filter``; any but ``stop`` comes with a
    human-readable ``note`` (:func:`cut_note`).
    ``seconds`` is the wall time of the batched generation that produced it, ``batch_size`` how
    many requests shared that generation.
    """

    text: str
    model: str
    base_model: str
    adapter: str | None
    tokens: int
    finish_reason: FinishReason
    seconds: float
    batch_size: int = 1
    note: str | None = None

    @property
    def truncated(self) -> bool:
        return self.finish_reason != "stop"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "truncated": self.truncated}


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end an answer: the tokenizer's EOS, the generation config's EOS (one or a
    list), and known end-of-turn markers that the vocabulary has."""
    ids: list[int] = []

    def add(value: Any) -> None:
        for v in value if isinstance(value, list | tuple) else [value]:
            if isinstance(v, int) and v >= 0 and v not in ids:
                ids.append(v)

    add(tokenizer.eos_token_id)
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        add(generation_config.eos_token_id)
    vocab = tokenizer.get_vocab()
    for token in _END_OF_TURN_TOKENS:
        if token in vocab:
            add(vocab[token])
    return ids


# --------------------------------------------------------------------------------------------
# Prompts and generation


def conversation_for(
    prompt: str | Sequence[Message], system_prompt: str | None = None
) -> list[dict[str, Any]]:
    """The chat messages for a request: a plain prompt becomes one user turn, after the system
    prompt the model was trained with (if any). A message list is used as given, with the system
    prompt put first when it has none."""
    if isinstance(prompt, str):
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    else:
        messages = [dict(m) for m in prompt]
    if system_prompt and not (messages and messages[0].get("role") == "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


@functools.cache
def _row_limits_class() -> type:
    """A transformers StoppingCriteria (built lazily: transformers is imported inside functions)."""
    import torch
    from transformers import StoppingCriteria

    class RowLimits(StoppingCriteria):
        """Per-row max new tokens and wall-clock deadline for one batched ``generate``.

        ``done_at[i]`` records the generated-token count at which row i was cut and why; rows
        that already emitted a stop token are left alone (generate finishes those itself).
        """

        def __init__(
            self,
            prompt_length: int,
            max_new: Sequence[int],
            deadlines: Sequence[float | None],
            clock: Callable[[], float],
            stop_ids: Sequence[int],
        ) -> None:
            self.prompt_length = prompt_length
            self.max_new = list(max_new)
            self.deadlines = list(deadlines)
            self.clock = clock
            self.stop_ids = list(stop_ids)
            self.done_at: dict[int, tuple[int, str]] = {}

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            generated = input_ids.shape[1] - self.prompt_length
            now = self.clock() if any(d is not None for d in self.deadlines) else None
            stops = torch.isin(
                input_ids[:, self.prompt_length :], torch.tensor(self.stop_ids, device=input_ids.device)
            )
            stopped = stops.any(dim=1).tolist()
            result = []
            for row in range(input_ids.shape[0]):
                if row in self.done_at:
                    result.append(True)
                    continue
                if stopped[row]:
                    result.append(True)
                    continue
                if generated >= self.max_new[row]:
                    self.done_at[row] = (generated, "length")
                elif now is not None and self.deadlines[row] is not None and now >= self.deadlines[row]:
                    self.done_at[row] = (generated, "time")
                result.append(row in self.done_at)
            return torch.tensor(result, dtype=torch.bool, device=input_ids.device)

    return RowLimits


def _generation_config(
    model: Any, tokenizer: Any, stop_ids: list[int], temperature: float, max_new: int
) -> Any:
    generation_config = copy.deepcopy(model.generation_config)
    generation_config.max_new_tokens = max_new
    generation_config.max_length = None
    generation_config.eos_token_id = stop_ids
    generation_config.pad_token_id = tokenizer.pad_token_id
    if temperature > 0:
        generation_config.do_sample = True
        generation_config.temperature = temperature
    else:
        # Greedy: clear the sampling knobs an instruct model's config ships with (they would warn).
        generation_config.do_sample = False
        generation_config.temperature = None
        generation_config.top_p = None
        generation_config.top_k = None
    return generation_config


def generate_one_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new: Sequence[int],
    temperature: float,
    deadlines: Sequence[float | None],
    clock: Callable[[], float],
    context: int,
    stop_ids: list[int] | None = None,
) -> list[Generation | FtbotError]:
    """One left-padded ``generate`` call for rendered prompts. A prompt that does not fit the
    context gets a ResourceExhausted in its slot; the others are still answered."""
    import torch

    if stop_ids is None:
        stop_ids = stop_token_ids(model, tokenizer)
    pad_with_eos(tokenizer)  # a tokenizer not from load_tokenizer (the mask hides the padding)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    results: list[Generation | FtbotError | None] = [None] * len(prompts)
    rows: list[int] = []
    for i, ids in enumerate(encoded):
        if len(ids) >= context:
            results[i] = ResourceExhausted(
                f"The prompt is {len(ids)} tokens long; this model reads at most {context} tokens "
                "(prompt and answer together).",
                hint="Shorten the prompt.",
            )
        else:
            rows.append(i)
    if not rows:
        return results  # type: ignore[return-value]

    longest = max(len(encoded[i]) for i in rows)
    row_max = [max(1, min(max_new[i], context - longest)) for i in rows]
    context_cut = [max_new[i] > context - longest for i in rows]
    batch = tokenizer.pad(
        {"input_ids": [encoded[i] for i in rows]}, padding=True, return_tensors="pt", padding_side="left"
    )
    device = getattr(model, "device", None) or torch.device("cpu")
    input_ids = batch["input_ids"].to(device)
    attention_mask = batch["attention_mask"].to(device)
    limits = _row_limits_class()(input_ids.shape[1], row_max, [deadlines[i] for i in rows], clock, stop_ids)
    generation_config = _generation_config(model, tokenizer, stop_ids, temperature, max(row_max))
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=generation_config,
            stopping_criteria=[limits],
        )
    new_tokens = output[:, input_ids.shape[1] :].tolist()
    stop_set = set(stop_ids)
    for slot, i in enumerate(rows):
        tokens = new_tokens[slot]
        cut = limits.done_at.get(slot)
        end = cut[0] if cut else len(tokens)
        stop_at = next((k for k, t in enumerate(tokens[:end]) if t in stop_set), None)
        if stop_at is not None:
            answer, reason = tokens[:stop_at], "stop"
        else:
            answer = tokens[:end]
            reason = cut[1] if cut else "length"
            if reason == "length" and context_cut[slot] and len(answer) >= row_max[slot]:
                reason = "context"
        text = tokenizer.decode(answer, skip_special_tokens=True).strip()
        results[i] = Generation(text=text, tokens=len(answer), finish_reason=reason)  # type: ignore[arg-type]
    return results  # type: ignore[return-value]


def generate_detailed(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[Message]],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    temperature: float = 0.0,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    chat_template: str | None = None,
) -> list[Generation]:
    """Like :func:`generate_batch`, returning :class:`Generation` (text, token count, finish
    reason) per conversation. ``deadline`` (a ``clock()`` value) cuts every row still running."""
    if max_new_tokens < 1:
        raise UsageError("max_new_tokens must be at least 1.")
    if batch_size < 1:
        raise UsageError("batch_size must be at least 1.")
    prompts = [render_prompt(tokenizer, c, chat_template) for c in conversations]
    # Similar lengths share a batch: less padding, less wasted compute. Order is restored below.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    context = context_length(model, tokenizer)
    stop_ids = stop_token_ids(model, tokenizer)
    out: list[Generation | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        results = generate_one_batch(
            model,
            tokenizer,
            [prompts[i] for i in chunk],
            max_new=[max_new_tokens] * len(chunk),
            temperature=temperature,
            deadlines=[deadline] * len(chunk),
            clock=clock,
            context=context,
            stop_ids=stop_ids,
        )
        for i, result in zip(chunk, results, strict=True):
            if isinstance(result, FtbotError):
                raise ResourceExhausted(f"Conversation {i + 1}: {result.message}", hint=result.hint)
            out[i] = result
    return out  # type: ignore[return-value]


def generate_batch(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[Message]],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    temperature: float = 0.0,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[str]:
    """Answer each conversation (a list of chat messages ending with the user's turn).

    Formats with the tokenizer's chat template plus the assistant generation prompt, pads on the
    LEFT, runs one ``generate`` per ``batch_size`` conversations (similar lengths together), is
    greedy unless ``temperature > 0``, stops at EOS / end-of-turn, and returns the answers in
    input order without template tokens. ``model`` may be a base or a ``PeftModel`` (its active
    adapter answers).

    Raises:
        ResourceExhausted: a conversation does not fit the model's context (the message says which).
        GenerationError: the tokenizer has no chat template or rejects a conversation.
    """
    results = generate_detailed(
        model,
        tokenizer,
        conversations,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        temperature=temperature,
        deadline=deadline,
        clock=clock,
    )
    return [r.text for r in results]


# --------------------------------------------------------------------------------------------
# The note of an answer cut short


def cut_note(
    finish_reason: str,
    *,
    max_new_tokens: int,
    timeout: float | None = None,
    context: int | None = None,
) -> str | None:
    """The note an :class:`Answer` cut short carries (None for ``stop``): the one wording for
    local and OpenAI answers. ``content_filter`` is OpenAI's filter withholding part of it."""
    if finish_reason == "length":
        return f"Answer cut at the {max_new_tokens}-token limit."
    if finish_reason == "time":
        return (
            f"Answer cut at the {timeout:g}-second time limit."
            if timeout
            else "Answer cut at the time limit."
        )
    if finish_reason == "context":
        return (
            f"Answer cut at the model's context length ({context} tokens)."
            if context
            else "Answer cut at the model's context length."
        )
    if finish_reason == "content_filter":
        return "OpenAI's content filter cut or withheld the answer."
    return None
