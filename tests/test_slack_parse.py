"""bot/slack/parse.py: slash-command grammar."""

from __future__ import annotations

import pytest

from bot.slack.parse import (
    AskRequest,
    CancelRequest,
    FinetuneRequest,
    HelpRequest,
    ListRequest,
    ParseError,
    StatusRequest,
    parse_ask,
    parse_finetune,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", FinetuneRequest()),
        ("latest", FinetuneRequest()),
        ("help", HelpRequest("finetune")),
        ("list", ListRequest()),
        ("status", StatusRequest()),
        ("status ft-1a2b3c4d", StatusRequest("ft-1a2b3c4d")),
        ("cancel ft-1a2b3c4d", CancelRequest("ft-1a2b3c4d")),
        ("F0123ABC epochs=2 lr=1e-4", FinetuneRequest("F0123ABC", {"epochs": "2", "lr": "1e-4"})),
        (
            "backend=openai base=gpt-4o-mini",
            FinetuneRequest(None, {"backend": "openai", "base": "gpt-4o-mini"}),
        ),
        ("abc12345 eval=def67890 r=8", FinetuneRequest("abc12345", {"r": "8"}, eval_dataset="def67890")),
        ('target="q_proj,v_proj"', FinetuneRequest(None, {"target": "q_proj,v_proj"})),
        ("EPOCHS=3", FinetuneRequest(None, {"epochs": "3"})),
    ],
)
def test_finetune_grammar(text: str, expected: object) -> None:
    assert parse_finetune(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a b", "second dataset"),
        ("epochs=", "needs a value"),
        ("backend=gpu", "not local or openai"),
        ("epochs=2 epochs=3", "given twice"),
        ("cancel", "exactly one job id"),
        ("list everything", "takes no arguments"),
        ("=3", "not a key=value"),
    ],
)
def test_finetune_errors_say_what_is_accepted(text: str, fragment: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_finetune(text)
    message = str(info.value)
    assert fragment in message
    if "cancel" not in text and "list" not in text:
        assert "epochs=" in message and "Usage" in message  # lists the accepted options


def test_slack_escapes_and_curly_quotes_are_undone() -> None:
    assert parse_finetune("target=\u201cq_proj,v_proj\u201d") == FinetuneRequest(
        None, {"target": "q_proj,v_proj"}
    )
    assert parse_ask("is 1 &lt; 2 &amp; 3?") == AskRequest("is 1 < 2 & 3?")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("what is 2+2?", AskRequest("what is 2+2?")),
        ("model=ft-1 how much?", AskRequest("how much?", model="ft-1")),
        ("compare model=ft-1 how much?", AskRequest("how much?", model="ft-1", compare=True)),
        ("x=3, what is x+1?", AskRequest("x=3, what is x+1?")),
        ("", HelpRequest("ask")),
        ("help", HelpRequest("ask")),
    ],
)
def test_ask_grammar(text: str, expected: object) -> None:
    assert parse_ask(text) == expected


def test_ask_options_without_a_question() -> None:
    with pytest.raises(ParseError, match="What is the question"):
        parse_ask("compare")
    with pytest.raises(ParseError, match="model="):
        parse_ask("model= hello")


@pytest.mark.parametrize(
    ("text", "meant"),
    [
        ("stauts", "/finetune status"),
        ("lsit", "/finetune list"),
        ("cancle ft-1a2b3c4d", "/finetune cancel ft-1a2b3c4d"),
        ("modles", "/finetune models"),
        ("hlep", "/finetune help"),
    ],
)
def test_a_misspelt_subcommand_gets_did_you_mean(text: str, meant: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_finetune(text)
    message = str(info.value)
    assert f"`{text.split()[0]}` is not a /finetune subcommand: did you mean `{meant}`?" in message
    assert "Usage" in message


@pytest.mark.parametrize("text", ["prices.jsonl", "F0123ABC", "deadbeefcafe", "latest", "myfile epochs=2"])
def test_dataset_names_are_not_taken_for_misspelt_subcommands(text: str) -> None:
    assert isinstance(parse_finetune(text), FinetuneRequest)
