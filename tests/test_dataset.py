"""engine.dataset: every error and warning, hostile input, stats, the JSON contract, split, leakage."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import dataset
from engine.dataset import (
    MAX_DEPTH,
    MAX_ERRORS_PER_LINE,
    MAX_STORED_PER_CODE,
    Example,
    leakage,
    load_examples,
    read_examples,
    split,
    validate_bytes,
    validate_file,
)
from engine.errors import UsageError

DATA = Path(__file__).parent / "data"


def chat(user: str, answer: str, system: str | None = "You are helpful.") -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


def jsonl(records: list[Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def good_lines(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        chat(f"Question {i}: how much is item {i}?", f"Item {i} costs {i * 3} dollars.")
        for i in range(start, start + n)
    ]


def codes(report: dataset.ValidationReport) -> list[tuple[int | None, str]]:
    return [(e.line, e.code) for e in report.errors]


def warning(report: dataset.ValidationReport, code: str) -> dataset.ValidationWarning:
    found = [w for w in report.warnings if w.code == code]
    assert found, f"no {code} warning in {[w.code for w in report.warnings]}"
    return found[0]


# ------------------------------------------------------------------------------- the fixtures


def test_every_error_kind_is_reported_with_its_line() -> None:
    expected = {int(k): v for k, v in json.loads((DATA / "every_error.codes.json").read_text()).items()}
    report = validate_file(DATA / "every_error.jsonl")
    assert not report.ok
    assert codes(report) == [(line, code) for line, code in sorted(expected.items())]
    assert report.stats["examples"] == 10
    assert report.stats["invalid_lines"] == len(expected)
    for e in report.errors:
        assert e.message.startswith(f"Line {e.line}: "), e.message
    # Every error kind of issue 2 that lives on a line is in the collection.
    assert set(expected.values()) >= {
        "not_utf8", "not_json", "not_object", "too_deep", "missing_messages", "invalid_messages",
        "missing_role", "unknown_role", "invalid_content", "empty_answer", "no_assistant", "invalid_weight",
    }  # fmt: skip


def test_good_file_is_usable_without_warnings() -> None:
    report = validate_file(DATA / "good_labels.jsonl")
    assert report.ok, report.to_text()
    assert report.errors == [] and report.warnings == []
    s = report.stats
    assert s["examples"] == 120 and s["lines"] == 120 and s["invalid_lines"] == 0
    assert s["task"] == "label"
    assert s["labels"] == {"billing": 40, "bug": 40, "feature request": 40}
    assert s["messages_per_example"] == {"min": 3, "median": 3, "p90": 3, "max": 3}
    assert s["tokens_estimated"] is True and s["tokenizer"] is None
    tok = s["tokens_per_example"]
    assert 0 < tok["min"] <= tok["median"] <= tok["p90"] <= tok["max"]
    assert s["total_tokens"] == s["training_tokens"] >= 120 * tok["min"]
    assert s["system_prompts"] == 1 and s["duplicates"] == 0


def test_bom_crlf_blank_lines_and_no_final_newline_are_accepted() -> None:
    raw = (DATA / "bom_crlf.jsonl").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw and not raw.endswith(b"\n")
    report = validate_file(DATA / "bom_crlf.jsonl")
    assert report.ok and report.errors == []
    assert report.stats["examples"] == 12
    lines = [ex.line for ex in read_examples(DATA / "bom_crlf.jsonl")]
    assert len(lines) == 12 and lines[:6] == [1, 2, 3, 4, 5, 6] and lines[6] == 9  # two blank lines


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("utf16.jsonl", "not_utf8"),
        ("image.png.jsonl", "binary_file"),
        ("empty.jsonl", "empty_file"),
        ("blank.jsonl", "empty_file"),
        ("too_few.jsonl", "too_few_examples"),
    ],
)
def test_whole_file_errors(name: str, code: str) -> None:
    report = validate_file(DATA / name)
    assert not report.ok
    assert codes(report) == [(None, code)]
    assert report.errors[0].message  # says what to do
    json.dumps(report.to_dict())


def test_png_message_names_the_file_type() -> None:
    report = validate_file(DATA / "image.png.jsonl")
    assert "PNG image" in report.errors[0].message


@pytest.mark.parametrize(
    ("head", "what"),
    [
        (b"%PDF-1.7\n", "PDF"),
        (b"PK\x03\x04rest", "ZIP"),
        (b"\x1f\x8b\x08\x00", "gzip"),
        (b'{"a": 1}\x00\x00', "NUL"),
    ],
)
def test_other_binary_files(head: str, what: str) -> None:
    report = validate_bytes(head + b"\n" * 3)
    assert codes(report) == [(None, "binary_file")]
    assert what in report.errors[0].message


def test_warnings_file() -> None:
    report = validate_file(DATA / "warnings.jsonl")
    assert report.ok
    assert warning(report, "few_examples").lines == ()
    dup = warning(report, "duplicates")
    assert dup.lines == (4,) and "line 4 = line 2" in dup.message
    assert warning(report, "conflicting_answers").lines == (3, 6)
    assert warning(report, "last_not_assistant").lines == (8,)
    systems = warning(report, "inconsistent_system_prompts")
    assert set(systems.lines) == {10, 12} and "3 different system prompts" in systems.message
    assert report.stats["duplicates"] == 1 and report.stats["conflicting_prompts"] == 1
    assert report.stats["system_prompts"] == 3


def test_lopsided_labels() -> None:
    report = validate_file(DATA / "lopsided_labels.jsonl")
    assert report.ok and report.stats["task"] == "label"
    w = warning(report, "label_imbalance")
    assert "90%" in w.message and "'positive'" in w.message


def test_tool_calls_content_parts_and_weights_are_valid() -> None:
    report = validate_file(DATA / "tools.jsonl")
    assert report.ok, report.to_text()
    examples = load_examples(DATA / "tools.jsonl")
    assert len(examples) == 12
    ex = examples[0]
    assert ex.answer == "Item 0 costs $10." and ex.answer_index == 4
    assert [m["role"] for m in ex.prompt] == ["system", "user", "assistant", "tool"]
    assert ex.system == "You can look up prices."


# ------------------------------------------------------------------------------- single rules


@pytest.mark.parametrize(
    ("line", "code", "needle"),
    [
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]} {}',
            "not_json",
            "extra text",
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": Infinity}]}',
            "not_json",
            "Infinity",
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "weight": '
            + "9" * 5000
            + "}]}",
            "not_json",
            "not valid JSON",
        ),
        ('{"messages": {"role": "user"}}', "invalid_messages", "non-empty list"),
        ('{"messages": [{"role": ["user"], "content": "hi"}]}', "unknown_role", "not one of"),
        ('{"messages": [{"role": null, "content": "hi"}]}', "missing_role", '"role"'),
        (
            '{"messages": [{"role": "user", "content": "hi", "tool_calls": []}, {"role": "assistant", "content": "x"}]}',
            "invalid_tool_calls",
            "only assistant",
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": []}]}',
            "empty_answer",
            "empty",
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]}',
            "empty_answer",
            'no \\"content\\"',
        ),
        (
            '{"messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}, {"role": "assistant", "content": "x"}]}',
            "invalid_content",
            "type",
        ),
        (
            '{"messages": [{"role": "user", "content": ["text"]}, {"role": "assistant", "content": "x"}]}',
            "invalid_content",
            "content part 1",
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "weight": "1"}]}',
            "invalid_weight",
            "0 (do not train",
        ),
    ],
)
def test_single_line_rules(line: str, code: str, needle: str) -> None:
    report = validate_bytes(jsonl(good_lines(10)) + line.encode() + b"\n")
    assert codes(report) == [(11, code)], report.to_text()
    assert needle.replace('\\"', '"') in report.errors[0].message


@pytest.mark.parametrize(
    ("line", "code", "needle"),
    [
        ('{"role": "assistent", "content": "x"}', "unknown_role", 'Did you mean "assistant"?'),
        ('{"role": "sytem", "content": "x"}', "unknown_role", 'Did you mean "system"?'),
        ('{"role": "usr", "content": "x"}', "unknown_role", 'Did you mean "user"?'),
        ('{"role": "User", "content": "x"}', "unknown_role", 'Did you mean "user"?'),
        ('{"role": "human", "content": "x"}', "unknown_role", 'Did you mean "user"?'),
        (
            '{"role": "user", "contnet": "x"}',
            "invalid_content",
            '(it has "contnet": did you mean "content"?)',
        ),
        ('{"rol": "user", "content": "x"}', "missing_role", '(it has "rol": did you mean "role"?)'),
        ('{"from": "user", "content": "x"}', "missing_role", '(it has "from": did you mean "role"?)'),
        ('{"role": "robot", "content": "x"}', "unknown_role", "Use one of those (lower case)."),
    ],
)
def test_a_typo_in_a_role_or_key_gets_did_you_mean(line: str, code: str, needle: str) -> None:
    example = '{"messages": [' + line + ', {"role": "assistant", "content": "y"}]}'
    report = validate_bytes(jsonl(good_lines(10)) + example.encode() + b"\n")
    assert codes(report) == [(11, code)], report.to_text()
    assert needle in report.errors[0].message, report.errors[0].message


def test_a_typo_in_the_assistant_content_key_gets_did_you_mean() -> None:
    example = '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "Content": "y"}]}'
    report = validate_bytes(jsonl(good_lines(10)) + example.encode() + b"\n")
    assert codes(report) == [(11, "empty_answer")]
    assert '(it has "Content": did you mean "content"?)' in report.errors[0].message


@pytest.mark.parametrize("key", ["mesages", "Messages", "message", "conversations"])
def test_a_typo_in_the_messages_key_gets_did_you_mean(key: str) -> None:
    example = json.dumps({key: chat("hi", "ho")["messages"]})
    report = validate_bytes(jsonl(good_lines(10)) + example.encode() + b"\n")
    assert codes(report) == [(11, "missing_messages")]
    assert f'(it has "{key}": did you mean "messages"?)' in report.errors[0].message


def test_a_long_unknown_role_gets_no_suggestion_and_no_slowdown() -> None:
    example = json.dumps({"messages": [{"role": "assistent" * 100_000, "content": "x"}]})
    report = validate_bytes(jsonl(good_lines(10)) + example.encode() + b"\n")
    assert codes(report) == [(11, "unknown_role")] and "Did you mean" not in report.errors[0].message


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}],}',
            "Line 11: not valid JSON: a trailing comma before '}' at column 88: JSON does not allow it; "
            "remove the comma.",
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}, ]}',
            "a trailing comma before ']' at column 87",
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x",}]}',
            "a trailing comma before '}' at column 86",
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]},',
            "a comma after the example at column 89",
        ),
    ],
)
def test_a_trailing_comma_is_named_as_such(line: str, needle: str) -> None:
    report = validate_bytes(jsonl(good_lines(10)) + line.encode() + b"\n")
    assert codes(report) == [(11, "not_json")]
    assert needle in report.errors[0].message, report.errors[0].message
    assert "remove the comma" in report.errors[0].message


def test_weight_zero_and_one_are_fine_and_float_equivalents_too() -> None:
    lines = good_lines(10)
    lines[0]["messages"][-1]["weight"] = 0
    lines[1]["messages"][-1]["weight"] = 1
    lines[2]["messages"][-1]["weight"] = 1.0
    report = validate_bytes(jsonl(lines))
    assert report.ok, report.to_text()


def test_a_line_reports_at_most_a_few_errors() -> None:
    bad = {"messages": [{"role": "robot", "content": "x"}] * 1000 + [{"role": "assistant", "content": "y"}]}
    report = validate_bytes(jsonl([*good_lines(10), bad]))
    assert len(report.errors) == MAX_ERRORS_PER_LINE
    assert {e.line for e in report.errors} == {11}


def test_errors_are_capped_per_code_but_counted() -> None:
    # 1000 different not_json errors (the column differs on every line): 50 listed, the rest counted.
    data = jsonl(good_lines(10)) + b"".join(b'{"messages": ' + b" " * i + b"x}\n" for i in range(1000))
    report = validate_bytes(data)
    assert len(report.errors) == MAX_STORED_PER_CODE
    assert report.error_counts == {"not_json": 1000}
    out = report.to_dict()
    assert len(out["errors"]) == MAX_STORED_PER_CODE + 1
    summary = out["errors"][-1]
    assert summary["line"] is None and summary["code"] == "not_json" and "950 more" in summary["message"]
    assert report.stats["invalid_lines"] == 1000


def test_the_same_error_on_many_lines_is_shown_once_with_its_lines() -> None:
    # Issue 12: 1000 identical lines gave 50 identical messages and "950 more".
    data = jsonl(good_lines(10)) + b"not json\n" * 1000
    report = validate_bytes(data)
    assert len(report.errors) == MAX_STORED_PER_CODE  # one stored entry per line, as before
    assert report.error_counts == {"not_json": 1000} and report.stats["invalid_lines"] == 1000
    (shown,) = report.to_dict()["errors"]
    assert shown["line"] == 11 and shown["code"] == "not_json"
    assert shown["message"].startswith(
        "Lines 11, 12, 13, 14, 15, 16, 17, 18, 19, 20 and 990 more (1000 lines): not valid JSON"
    )
    text = report.to_text()
    assert "1000 error(s)" in text and text.count("not valid JSON") == 1


def test_repeats_are_grouped_by_message_and_others_stay_apart() -> None:
    role = '{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}'
    lines = [json.dumps(x) for x in good_lines(10)] + [role, "not json", role, "not json", "{}", role]
    report = validate_bytes("\n".join(lines).encode())
    shown = [(e["line"], e["code"], e["message"].split(":")[0]) for e in report.to_dict()["errors"]]
    assert shown == [
        (11, "unknown_role", "Lines 11, 13, 16"),
        (12, "not_json", "Lines 12, 14"),
        (15, "missing_messages", "Line 15"),
    ]


def test_not_utf8_names_the_byte() -> None:
    report = validate_bytes(jsonl(good_lines(10)) + b'{"messages": "\xc3\x28"}\n')
    assert codes(report) == [(11, "not_utf8")]
    assert "0xc3" in report.errors[0].message and "UTF-8" in report.errors[0].message


def test_too_long_with_estimate_and_with_a_tokenizer() -> None:
    data = jsonl([*good_lines(10), chat("long " * 400, "ok")])
    estimated = validate_bytes(data, max_length=100)
    w = warning(estimated, "too_long")
    assert w.lines == (11,) and "estimated" in w.message
    assert (
        estimated.stats["over_max_length"] == 1
        and estimated.stats["training_tokens"] < estimated.stats["total_tokens"]
    )

    def counter(messages: list[dict[str, Any]]) -> int:
        return sum(len(str(m.get("content", "")).split()) for m in messages)

    counter.name = "words"  # type: ignore[attr-defined]
    counter.count_text = lambda text: len(text.split())  # type: ignore[attr-defined]
    counted = validate_bytes(data, max_length=100, token_counter=counter)
    w = warning(counted, "too_long")
    assert w.lines == (11,) and "words tokenizer" in w.message and "estimated" not in w.message
    assert counted.stats["tokens_estimated"] is False and counted.stats["tokenizer"] == "words"
    assert counted.stats["tokens_per_example"]["max"] == 3 + 400 + 1
    assert counted.stats["assistant_tokens_per_example"]["median"] == 5


def test_counter_max_length_is_the_default() -> None:
    def counter(messages: list[dict[str, Any]]) -> int:
        return 50

    counter.max_length = 40  # type: ignore[attr-defined]
    report = validate_bytes(jsonl(good_lines(10)), token_counter=counter)
    assert report.stats["max_length"] == 40 and report.stats["over_max_length"] == 10


def test_a_failing_token_counter_is_a_warning_not_a_crash() -> None:
    def counter(messages: list[dict[str, Any]]) -> int:
        if "item 3" in messages[1]["content"]:
            raise ValueError("template cannot render this")
        return 10

    report = validate_bytes(jsonl(good_lines(12)), token_counter=counter)
    assert report.ok
    assert warning(report, "token_count_failed").lines == (4,)
    assert report.stats["tokens_estimated"] == "partly"


def test_last_message_not_assistant_still_uses_the_last_answer() -> None:
    lines = good_lines(10)
    lines[0]["messages"].append({"role": "user", "content": "and tomorrow?"})
    report = validate_bytes(jsonl(lines))
    assert warning(report, "last_not_assistant").lines == (1,)
    ex = load_examples(io.BytesIO(jsonl(lines)))[0]
    assert ex.answer == "Item 0 costs 0 dollars." and ex.answer_index == 2


def test_few_examples_threshold() -> None:
    assert "few_examples" in [w.code for w in validate_bytes(jsonl(good_lines(99))).warnings]
    assert "few_examples" not in [w.code for w in validate_bytes(jsonl(good_lines(100))).warnings]
    assert codes(validate_bytes(jsonl(good_lines(9)))) == [(None, "too_few_examples")]
    assert validate_bytes(jsonl(good_lines(10))).ok


def test_task_detection_in_stats() -> None:
    numeric = [chat(f"price of {i}?", f"{i * 7}.50") for i in range(20)]
    as_json = [chat(f"extract {i}", json.dumps({"name": f"n{i}", "qty": i})) for i in range(20)]
    assert validate_bytes(jsonl(numeric)).stats["task"] == "numeric"
    assert validate_bytes(jsonl(as_json)).stats["task"] == "json"
    assert validate_bytes(jsonl(good_lines(20))).stats["task"] == "text"
    assert dataset.detect_task(["a", "b", "a", "b"]) == "label"


def test_duplicates_and_conflicts_ignore_formatting_but_not_content() -> None:
    base = good_lines(10)
    same = json.dumps(base[0], indent=None, separators=(",", ":"))  # other formatting, same content
    spaced = chat("Question 0: how much is item 0?  ", "Item 0 costs 0 dollars.")  # trailing spaces
    other_answer = chat("Question 0: how much is item 0?", "Free!")
    data = jsonl(base) + same.encode() + b"\n" + jsonl([spaced, other_answer])
    report = validate_bytes(data)
    dup = warning(report, "duplicates")
    assert dup.lines == (11, 12)
    assert warning(report, "conflicting_answers").lines == (1, 13)


# ------------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 100_000, 1_000_000])
def test_deep_nesting_is_an_error_not_a_crash(depth: int) -> None:
    deep_array = b"[" * depth + b"]" * depth
    deep_object = b'{"a":' * depth + b"1" + b"}" * depth
    inside = b'{"messages": [{"role": "user", "content": ' + b"[" * depth + b"]" * depth + b"}]}"
    data = jsonl(good_lines(10)) + b"\n".join([deep_array, deep_object, inside]) + b"\n"
    report = validate_bytes(data)
    assert codes(report) == [(11, "too_deep"), (12, "too_deep"), (13, "too_deep")]


def test_nesting_at_the_limit_is_fine() -> None:
    lines = good_lines(11)
    nested: Any = 1
    for _ in range(MAX_DEPTH - 1):  # the line object itself is level 1
        nested = [nested]
    lines[0]["meta"] = nested
    assert validate_bytes(jsonl(lines)).ok
    lines[0]["meta"] = [nested]
    assert codes(validate_bytes(jsonl(lines))) == [(1, "too_deep")]


def test_deep_nesting_in_a_worker_thread() -> None:
    # Bolt runs listeners in threads; the scanner's recursion guard must hold there too.
    depth = 100_000
    data = jsonl(good_lines(10)) + b"[" * depth + b"]" * depth + b"\n"
    out: list[dataset.ValidationReport] = []
    t = threading.Thread(target=lambda: out.append(validate_bytes(data)))
    t.start()
    t.join()
    assert codes(out[0]) == [(11, "too_deep")]


def test_huge_line_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.write(jsonl(good_lines(5)))
        f.write(b'{"messages": [{"role": "user", "content": "')
        chunk = b"x" * 2**20
        for _ in range(30):
            f.write(chunk)
        f.write(b'"}]}\n')
        f.write(jsonl(good_lines(5, start=5)))
    tracemalloc.start()
    try:
        report = validate_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert codes(report) == [(6, "line_too_long")]
    assert "30.0 MiB" in report.errors[0].message
    assert report.stats["examples"] == 10
    assert [ex.line for ex in read_examples(path)] == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]
    # The 30 MiB line is never held: at most the 8 MiB limit plus read buffers.
    assert peak < 20 * 2**20, peak


def test_huge_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "tail.jsonl"
    path.write_bytes(jsonl(good_lines(10)) + b"[" + b"1," * (5 * 2**20) + b"1]")
    report = validate_file(path)
    assert codes(report) == [(11, "line_too_long")]


def test_file_of_one_huge_line_of_brackets(tmp_path: Path) -> None:
    path = tmp_path / "brackets.jsonl"
    path.write_bytes(b"[" * (9 * 2**20))
    report = validate_file(path)
    assert ("line_too_long" in report.error_counts) and not report.ok


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
_MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["system", "user", "assistant", "tool", "bot", ""]) | _JSON,
        "content": st.text(max_size=20) | _JSON,
        "weight": st.sampled_from([0, 1, 2, 0.5, True, None, "1"]),
        "tool_calls": _JSON,
    },
)
_EXAMPLE = st.fixed_dictionaries(
    {}, optional={"messages": st.lists(_MESSAGE, max_size=4) | _JSON, "tools": _JSON}
)


def _check_report(report: dataset.ValidationReport, n_lines: int) -> None:
    out = report.to_dict()
    json.dumps(out)
    assert set(out) == {"ok", "errors", "warnings", "stats"}
    for e in out["errors"]:
        assert e["line"] is None or 1 <= e["line"] <= n_lines
        assert isinstance(e["message"], str) and e["message"]


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=60), max_size=12))
def test_random_bytes_never_crash(lines: list[bytes]) -> None:
    data = b"\n".join(lines)
    _check_report(validate_bytes(data), max(1, data.count(b"\n") + 1))
    list(read_examples(io.BytesIO(data)))


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_EXAMPLE | _JSON, max_size=12))
def test_random_json_never_crashes(values: list[Any]) -> None:
    data = b"".join(json.dumps(v).encode() + b"\n" for v in values)
    report = validate_bytes(data + jsonl(good_lines(10)))
    _check_report(report, len(values) + 10)
    examples = list(read_examples(io.BytesIO(data)))
    assert all(ex.messages[ex.answer_index]["role"] == "assistant" for ex in examples)
    # The usable lines are exactly the lines without errors.
    bad = {e.line for e in report.errors if e.line is not None}
    assert {ex.line for ex in examples} == set(range(1, len(values) + 1)) - bad


@settings(max_examples=100, deadline=None, database=None)
@given(st.text(max_size=200))
def test_random_text_lines_never_crash(text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    _check_report(validate_bytes(data), max(1, data.count(b"\n") + 1))


# ------------------------------------------------------------------------------- the contract


def test_to_dict_matches_the_cli_contract() -> None:
    report = validate_file(DATA / "every_error.jsonl")
    out = json.loads(json.dumps(report.to_dict()))
    assert set(out) == {"ok", "errors", "warnings", "stats"}
    assert out["ok"] is False
    for e in out["errors"]:
        assert set(e) == {"line", "code", "message"}
        assert e["line"] is None or isinstance(e["line"], int)
    for w in validate_file(DATA / "warnings.jsonl").to_dict()["warnings"]:
        assert set(w) == {"code", "message", "lines"} and all(isinstance(x, int) for x in w["lines"])
    assert isinstance(out["stats"]["examples"], int)
    assert out["stats"]["task"] in {"numeric", "json", "label", "text"}


def test_to_text_is_readable() -> None:
    text = validate_file(DATA / "every_error.jsonl").to_text(name="every_error.jsonl")
    assert text.startswith("every_error.jsonl: NOT usable")
    assert "Line 12: not valid JSON" in text and "Warnings:" in text


def test_importing_dataset_loads_no_heavy_library() -> None:
    code = "import engine.dataset, sys; print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------- examples, split, leakage


def examples_of(records: list[dict[str, Any]]) -> list[Example]:
    return load_examples(io.BytesIO(jsonl(records)))


def test_read_examples_fields_and_prompt_key() -> None:
    records = [
        *good_lines(3),
        chat("Question 0: how much is item 0?", "different"),
        chat("Question 0: how much is item 0?", "x", system="other"),
    ]
    exs = examples_of(records)
    assert [ex.line for ex in exs] == [1, 2, 3, 4, 5]
    assert exs[0].answer == "Item 0 costs 0 dollars."
    assert exs[0].prompt == records[0]["messages"][:2]
    assert exs[0].prompt_key == exs[3].prompt_key  # same prompt, other answer
    assert exs[0].prompt_key != exs[4].prompt_key  # the system prompt is part of the prompt
    assert len({ex.prompt_key for ex in exs[:3]}) == 3
    assert examples_of(records)[0].prompt_key == exs[0].prompt_key  # stable


def test_read_examples_skips_bad_lines() -> None:
    data = jsonl(good_lines(2)) + b"oops\n" + jsonl(good_lines(1, start=2))
    assert [ex.line for ex in read_examples(io.BytesIO(data))] == [1, 2, 4]
    assert list(read_examples(DATA / "image.png.jsonl")) == []


@pytest.mark.parametrize(("n", "expected_eval"), [(1000, 100), (200, 20), (50, 10), (15, 7), (3, 1), (1, 0)])
def test_split_sizes(n: int, expected_eval: int) -> None:
    train, held = split(examples_of(good_lines(n)))
    assert len(held) == expected_eval and len(train) + len(held) == n


def test_split_is_deterministic_and_order_independent() -> None:
    exs = examples_of(good_lines(300))
    train1, eval1 = split(exs, eval_fraction=0.2, seed=7)
    _, eval2 = split(exs, eval_fraction=0.2, seed=7)
    assert [e.line for e in eval1] == [e.line for e in eval2] and len(eval1) == 60
    shuffled = exs[:]
    random.Random(1).shuffle(shuffled)
    _, eval3 = split(shuffled, eval_fraction=0.2, seed=7)
    assert sorted(e.line for e in eval3) == [e.line for e in eval1]
    assert [e.line for e in eval3] == [
        e.line for e in shuffled if e.line in {x.line for x in eval3}
    ]  # input order kept
    _, eval4 = split(exs, eval_fraction=0.2, seed=8)
    assert [e.line for e in eval4] != [e.line for e in eval1]
    assert {e.line for e in train1} | {e.line for e in eval1} == {e.line for e in exs}


def test_split_keeps_repeated_prompts_on_one_side() -> None:
    records = good_lines(100)
    records += [chat("Question 5: how much is item 5?", f"answer {k}") for k in range(4)]
    exs = examples_of(records)
    for seed in range(20):
        train, held = split(exs, seed=seed)
        assert leakage(train, held) == []
        assert len(held) >= 10


def test_split_rejects_bad_arguments() -> None:
    with pytest.raises(UsageError):
        split(examples_of(good_lines(20)), eval_fraction=1.5)
    with pytest.raises(UsageError):
        split(examples_of(good_lines(20)), min_eval=-1)


def test_leakage_between_files() -> None:
    train = examples_of(good_lines(20))
    evals = examples_of(
        [
            chat("Question 3: how much is item 3?", "other answer"),
            chat("new question", "x"),
            *good_lines(1, start=7),
        ]
    )
    assert leakage(train, evals) == [(4, 1), (8, 3)]
    assert leakage(train, examples_of([chat("unrelated", "y")])) == []


def test_split_never_takes_everything_when_prompts_repeat() -> None:
    same = examples_of([chat("the one question", f"answer {k}") for k in range(30)])
    train, held = split(same)
    assert held == [] and len(train) == 30  # one prompt cannot be split without leakage
    two = examples_of([chat("q1", f"a{k}") for k in range(20)] + [chat("q2", f"b{k}") for k in range(20)])
    train, held = split(two)
    assert len(train) == 20 and len(held) == 20 and leakage(train, held) == []


def test_examples_without_a_prompt_are_told_apart_by_their_answer() -> None:
    records = [{"messages": [{"role": "assistant", "content": f"Fact {i}."}]} for i in range(30)]
    records.append(records[0])
    report = validate_bytes(jsonl(records))
    assert report.ok
    assert [w.code for w in report.warnings] == ["few_examples", "duplicates"]
    train, held = split(examples_of(records))
    assert len(held) == 10 and leakage(train, held) == []
