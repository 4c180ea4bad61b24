"""examples/: the committed datasets are what examples/make_examples.py makes, valid, and of the
task they are meant to show."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.evaluate import detect_task, parse_json_object, parse_number

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXPECTED = {
    "prices.jsonl": "numeric",
    "extraction.jsonl": "json",
    "labels.jsonl": "label",
    "sentiment.jsonl": "label",
}


def load(name: str) -> list[list[dict]]:
    return [
        json.loads(line)["messages"] for line in (EXAMPLES / name).read_text(encoding="utf-8").splitlines()
    ]


def test_the_script_reproduces_the_committed_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(EXAMPLES / "make_examples.py"), str(tmp_path)], check=True, capture_output=True
    )
    for name in EXPECTED:
        assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes(), (
            f"examples/{name} differs from what examples/make_examples.py makes: run it and commit the result"
        )


@pytest.mark.parametrize(("name", "task"), sorted(EXPECTED.items()))
def test_examples_are_valid_and_of_their_task(name: str, task: str) -> None:
    rows = load(name)
    assert 200 <= len(rows) <= 400
    assert len({json.dumps(r[1]) for r in rows}) == len(rows), "duplicate prompts"
    assert len({r[0]["content"] for r in rows}) == 1, "one system prompt per dataset"
    assert all([m["role"] for m in r] == ["system", "user", "assistant"] for r in rows)
    answers = [r[-1]["content"] for r in rows]
    assert detect_task(answers) == task
    if task == "numeric":
        prices = [parse_number(a) for a in answers]
        assert all(a == f"{p:.2f}" for a, p in zip(answers, prices, strict=True))
        assert min(prices) > 0 and max(prices) / min(prices) > 50  # a real spread of prices
    if task == "json":
        keys = {tuple(parse_json_object(a)) for a in answers}
        assert keys == {("name", "product", "issue", "urgency", "order_id")}
        for r, a in zip(rows, answers, strict=True):
            obj, email = parse_json_object(a), r[1]["content"]
            assert obj["issue"] in {"billing", "login", "shipping", "defect", "refund", "setup"}
            assert obj["urgency"] in {"low", "medium", "high"}
            # Every value is answerable from the email itself.
            assert obj["name"] in email and obj["product"] in email
            assert obj["order_id"] is None or obj["order_id"] in email


def test_labels_use_team_names_the_base_model_cannot_know() -> None:
    """labels.jsonl is the special-vocabulary demo: the short system prompt does not name the teams,
    no message contains a team name, and no team dominates."""
    rows = load("labels.jsonl")
    answers = [r[-1]["content"] for r in rows]
    teams = set(answers)
    assert teams == {"harbor", "ledger", "keystone", "forge", "compass"}
    system = rows[0][0]["content"].lower()
    assert not any(team in system for team in teams)
    assert not any(team in r[1]["content"].lower() for r in rows for team in teams)
    assert all(0.15 <= answers.count(team) / len(answers) <= 0.25 for team in teams)


def test_sentiment_is_told_its_labels_in_the_prompt() -> None:
    """sentiment.jsonl is the prompting-is-enough example: the system prompt names both answers."""
    rows = load("sentiment.jsonl")
    answers = [r[-1]["content"] for r in rows]
    assert set(answers) == {"positive", "negative"}
    assert all(0.4 <= answers.count(label) / len(answers) <= 0.6 for label in set(answers))
    assert all(label in rows[0][0]["content"] for label in set(answers))


def test_examples_pass_the_dataset_validator() -> None:
    dataset = pytest.importorskip("engine.dataset")
    for name, task in EXPECTED.items():
        report = dataset.validate_file(EXAMPLES / name).to_dict()
        assert report["ok"] and not report["errors"], (name, report["errors"][:3])
        assert report["stats"].get("task") == task
