"""engine/prompts.py: eval prompts, references, few-shot prompts and shot selection, max_new_tokens."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import UsageError
from engine.prompts import (
    eval_prompt,
    few_shot_prompt,
    max_new_tokens,
    prompt_key,
    prompt_text,
    reference,
    select_shots,
    split_example,
)

SYSTEM = {"role": "system", "content": "Reply with the price only."}


def example(question: str, answer: str, *, system: bool = True) -> list[dict[str, Any]]:
    return ([dict(SYSTEM)] if system else []) + [
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]


def words(messages: list[dict[str, Any]]) -> int:
    """A stand-in tokenizer: one token per word plus 3 per message (template overhead)."""
    return sum(len(str(m.get("content") or "").split()) + 3 for m in messages)


def test_split_example() -> None:
    ex = example("A red chair", "49.00")
    prompt, ref = split_example(ex)
    assert prompt == ex[:2] and ref == "49.00"
    assert eval_prompt(ex) == ex[:2] and reference(ex) == "49.00"
    assert prompt_text(prompt) == "A red chair"


def test_split_multi_turn_uses_the_last_assistant_turn() -> None:
    ex = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "price of a lamp?"},
        {"role": "assistant", "content": "20.00", "weight": 1},
    ]
    prompt, ref = split_example(ex)
    assert prompt == ex[:3] and ref == "20.00"


def test_split_does_not_mutate_and_copies() -> None:
    ex = example("q", "a")
    before = copy.deepcopy(ex)
    prompt, _ = split_example(ex)
    prompt[0]["content"] = "changed"
    assert ex == before


def test_split_refuses_examples_without_a_question_or_answer() -> None:
    with pytest.raises(UsageError):
        split_example([{"role": "user", "content": "q"}])
    with pytest.raises(UsageError):
        split_example([{"role": "assistant", "content": "a"}])
    # An assistant turn with only tool calls has an empty reference.
    assert split_example([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": []}])[1] == ""


def test_few_shot_prompt_keeps_the_system_prompt_first() -> None:
    shots = [example("Blue sofa", "899.00"), example("Oak table", "450.00", system=False)]
    prompt = few_shot_prompt(eval_prompt(example("Red chair", "49.00")), shots)
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert prompt[0] == SYSTEM
    assert [m["content"] for m in prompt[1:]] == ["Blue sofa", "899.00", "Oak table", "450.00", "Red chair"]
    assert few_shot_prompt(eval_prompt(example("Red chair", "49.00", system=False)), [])[0]["role"] == "user"


def test_few_shot_multi_turn_shot_stops_at_its_last_answer() -> None:
    shot = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "dangling"},
    ]
    # A shot that ends with a user turn is replayed only up to its last assistant turn.
    prompt = few_shot_prompt([{"role": "user", "content": "q"}], [shot])
    assert [m["content"] for m in prompt] == ["a", "b", "q"]


def _train(n: int, answers: list[str] | None = None) -> list[list[dict[str, Any]]]:
    return [
        example(f"product number {i} with some words", (answers or ["1.00"])[i % len(answers or ["1.00"])])
        for i in range(n)
    ]


def test_select_shots_takes_k_max_when_they_fit() -> None:
    train = _train(20, [f"{i}.00" for i in range(20)])
    evals = [eval_prompt(example("a question", "x"))]
    shots = select_shots(
        train, eval_prompts=evals, token_counter=words, context_tokens=4096, max_new_tokens=16
    )
    assert len(shots) == 5
    assert all(s in train for s in shots)
    # Deterministic per seed, different across seeds.
    again = select_shots(
        train, eval_prompts=evals, token_counter=words, context_tokens=4096, max_new_tokens=16
    )
    other = select_shots(
        train, eval_prompts=evals, token_counter=words, context_tokens=4096, max_new_tokens=16, seed=1
    )
    assert again == shots and other != shots


def test_select_shots_fits_the_context() -> None:
    train = _train(20, [f"{i}.00" for i in range(20)])
    evals = [eval_prompt(example("short", "x")), eval_prompt(example("a much longer question " * 5, "x"))]
    for context in (30, 60, 90, 200):
        shots = select_shots(
            train, eval_prompts=evals, token_counter=words, context_tokens=context, max_new_tokens=10
        )
        if shots:
            assert words(few_shot_prompt(evals[1], shots)) + 10 <= context
        bigger = select_shots(
            train, eval_prompts=evals, token_counter=words, context_tokens=context + 40, max_new_tokens=10
        )
        assert len(bigger) >= len(shots)
    assert (
        select_shots(train, eval_prompts=evals, token_counter=words, context_tokens=20, max_new_tokens=10)
        == []
    )


def test_select_shots_never_uses_an_eval_prompt() -> None:
    train = _train(6, ["1.00", "2.00", "3.00", "4.00", "5.00", "6.00"])
    evals = [eval_prompt(t) for t in train[:5]]  # leaked into the eval split
    shots = select_shots(
        train, eval_prompts=evals, token_counter=words, context_tokens=4096, max_new_tokens=8
    )
    assert shots == [train[5]]
    assert prompt_key(eval_prompt(train[5])) not in {prompt_key(p) for p in evals}


def test_select_shots_prefers_distinct_answers() -> None:
    answers = ["billing"] * 10 + ["bug", "feature"]
    train = [example(f"message {i}", a) for i, a in enumerate(answers)]
    shots = select_shots(
        train,
        eval_prompts=[[{"role": "user", "content": "q"}]],
        token_counter=words,
        context_tokens=4096,
        max_new_tokens=8,
        k_max=3,
    )
    assert sorted(reference(s) for s in shots) == ["billing", "bug", "feature"]


def test_select_shots_edge_cases() -> None:
    evals = [[{"role": "user", "content": "q"}]]
    assert (
        select_shots([], eval_prompts=evals, token_counter=words, context_tokens=100, max_new_tokens=8) == []
    )
    assert (
        select_shots(
            _train(3), eval_prompts=evals, token_counter=words, context_tokens=100, max_new_tokens=8, k_max=0
        )
        == []
    )
    # Examples without an answer are skipped, not an error.
    bad = [[{"role": "user", "content": "no answer"}], example("q2", "  ")]
    assert (
        select_shots(bad, eval_prompts=evals, token_counter=words, context_tokens=100, max_new_tokens=8) == []
    )
    with pytest.raises(ValueError):
        select_shots(_train(3), eval_prompts=evals, token_counter=words, context_tokens=0, max_new_tokens=8)


def test_max_new_tokens() -> None:
    # words(): content words + 3 per message.
    assert max_new_tokens(["one two"], words) == 5 + 8  # small answers: the 8-token floor
    assert max_new_tokens(["w " * 97, "short"], words) == 100 + 25  # 25% margin
    assert max_new_tokens(["w " * 997], words, cap=512) == 512
    assert max_new_tokens([], words) == 8


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=15),
    st.lists(st.integers(1, 40), min_size=1, max_size=4),
    st.integers(20, 400),
    st.integers(0, 5),
)
def test_select_shots_property(train_lengths, eval_lengths, context, k_max) -> None:
    train = [example(" ".join(["w"] * n) + f" {i}", f"{i}.00") for i, n in enumerate(train_lengths)]
    evals = [eval_prompt(example(" ".join(["e"] * n), "x")) for n in eval_lengths]
    shots = select_shots(
        train, eval_prompts=evals, token_counter=words, context_tokens=context, max_new_tokens=10, k_max=k_max
    )
    assert len(shots) <= k_max
    assert len({prompt_key(s) for s in shots}) == len(shots)  # no example twice
    assert all(s in train for s in shots)
    for prompt in evals:
        if shots:
            assert words(few_shot_prompt(prompt, shots)) + 10 <= context
