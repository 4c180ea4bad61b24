"""engine.dataset: whole-file mistakes are one error that says how to convert the file (issue 12).

A JSON array, a CSV/TSV file, the old prompt/completion format and pretty-printed objects used to
give hundreds of line errors (2,403 for a JSON array); each is now one error, and the conversion it
suggests is run here to check that it really yields a usable file.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from engine.dataset import ValidationReport, validate_file


def example(i: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "Answer with the price."},
            {"role": "user", "content": f"How much is item {i}?"},
            {"role": "assistant", "content": f"{i * 3} dollars"},
        ]
    }


def jsonl(records: list[Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def only_error(report: ValidationReport) -> dict[str, Any]:
    """The report's single error (as ``ftbot validate --json`` shows it), checking it is the only one."""
    shown = report.to_dict()["errors"]
    assert len(shown) == 1, shown
    assert sum(report.error_counts.values()) == 1, report.error_counts
    assert not report.ok
    return shown[0]


def command_in(message: str, start: str) -> str:
    """The shell command a message suggests: from ``start`` to the output file name."""
    found = re.search(re.escape(start) + r".*?> \S+\.jsonl", message)
    assert found, message
    return found.group(0)


def run_shell(command: str, cwd: Path) -> None:
    subprocess.run(["bash", "-c", command], cwd=cwd, check=True, capture_output=True, timeout=60)


def run_python_advice(message: str, cwd: Path) -> None:
    """Run the ``python -c ...`` command a message suggests, with this interpreter."""
    command = command_in(message, "python -c")
    run_shell(command.replace("python -c", f"{sys.executable} -c", 1), cwd)


needs_jq = pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")


# ------------------------------------------------------------------------------- JSON arrays


def test_a_pretty_printed_json_array_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps([example(i) for i in range(500)], indent=2))
    lines = path.read_text().count("\n") + 1
    report = validate_file(path)
    error = only_error(report)  # before: one not_json error per line (thousands)
    assert error["code"] == "json_array_file" and error["line"] == 1
    assert f"lines 1-{lines}" in error["message"]
    assert "jq -c '.[]' data.json > data.jsonl" in error["message"]
    assert report.stats["invalid_lines"] == lines
    assert report.to_text().count("error(s)") == 1 and "NOT usable - 1 error(s)" in report.to_text()


def test_the_suggested_python_converts_a_json_array(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text("[\n" + ",\n".join(json.dumps(example(i)) for i in range(30)) + "\n]\n")
    error = only_error(validate_file(path))
    assert error["code"] == "json_array_file"
    run_python_advice(error["message"], tmp_path)
    converted = validate_file(tmp_path / "data.jsonl")
    assert converted.ok and converted.stats["examples"] == 30


@needs_jq
def test_the_suggested_jq_converts_a_json_array(tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text(json.dumps([example(i) for i in range(20)], indent=4))
    error = only_error(validate_file(tmp_path / "data.json"))
    run_shell(command_in(error["message"], "jq -c"), tmp_path)
    assert validate_file(tmp_path / "data.jsonl").stats["examples"] == 20


def test_a_json_array_on_one_line_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps([example(i) for i in range(40)]))
    error = only_error(validate_file(path))  # before: not_object and too_few_examples
    assert error["code"] == "json_array_file" and "(line 1)" in error["message"]


@needs_jq
def test_a_json_array_of_prompt_completion_pairs_gets_one_command_for_both(tmp_path: Path) -> None:
    pairs = [{"prompt": f"How much is item {i}?", "completion": f"{i} dollars"} for i in range(25)]
    (tmp_path / "data.json").write_text(json.dumps(pairs, indent=2))
    error = only_error(validate_file(tmp_path / "data.json"))
    assert error["code"] == "json_array_file" and "prompt/completion" in error["message"]
    run_shell(command_in(error["message"], "jq -c '.[] |"), tmp_path)
    converted = validate_file(tmp_path / "data.jsonl")
    assert converted.ok and converted.stats["examples"] == 25


@needs_jq
@pytest.mark.parametrize("indent", [None, 2])
def test_an_object_holding_the_examples_under_a_key(tmp_path: Path, indent: int | None) -> None:
    (tmp_path / "data.json").write_text(json.dumps({"data": [example(i) for i in range(15)]}, indent=indent))
    error = only_error(validate_file(tmp_path / "data.json"))
    assert error["code"] == "json_array_file" and '"data"' in error["message"]
    run_shell(command_in(error["message"], "jq -c"), tmp_path)
    assert validate_file(tmp_path / "data.jsonl").stats["examples"] == 15


def test_a_large_json_array_is_recognised_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    long = example(0)
    long["messages"][1]["content"] = "Describe the item in detail. " * 40
    with open(path, "w") as f:
        f.write("[\n")
        for i in range(5_000):
            f.write(json.dumps(long, indent=2) + (",\n" if i < 4_999 else "\n"))
        f.write("]\n")
    assert path.stat().st_size > 6 * 2**20
    (tmp_path / "warm.json").write_text("[]")
    validate_file(tmp_path / "warm.json")  # imports engine.evaluate before memory is traced
    tracemalloc.start()
    try:
        report = validate_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert only_error(report)["code"] == "json_array_file"
    assert peak < 3 * 2**20, peak  # the lines' errors are set aside in bounded memory, like all errors


# ------------------------------------------------------------------------------- CSV / TSV


def test_a_csv_file_is_one_error_and_its_conversion_works(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    rows = "".join(f'"How much is item {i}, roughly?",{i} dollars\n' for i in range(151))
    path.write_text("prompt,completion\n" + rows)
    error = only_error(validate_file(path))  # before: 152 errors
    assert error["code"] == "csv_file" and error["line"] == 1
    assert "header row: prompt, completion" in error["message"] and "lines 1-152" in error["message"]
    run_python_advice(error["message"], tmp_path)
    converted = validate_file(tmp_path / "data.jsonl")
    assert converted.ok and converted.stats["examples"] == 151
    first = json.loads((tmp_path / "data.jsonl").read_text().splitlines()[0])
    assert first["messages"][0] == {"role": "user", "content": "How much is item 0, roughly?"}


def test_a_tsv_file_with_other_column_names(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("id\tquestion\tanswer\n" + "".join(f"{i}\tWhat is {i}+1?\t{i + 1}\n" for i in range(20)))
    error = only_error(validate_file(path))
    assert error["code"] == "csv_file" and "TSV" in error["message"]
    assert "r['question']" in error["message"] and "r['answer']" in error["message"]
    run_python_advice(error["message"], tmp_path)
    converted = validate_file(tmp_path / "data.jsonl")
    assert converted.ok and converted.stats["examples"] == 20


# ------------------------------------------------------------------------------- prompt/completion


@needs_jq
def test_the_old_prompt_completion_format_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    path.write_text(jsonl([{"prompt": f"Item {i}?", "completion": f" {i} dollars"} for i in range(151)]))
    error = only_error(validate_file(path))  # before: 151 missing_messages + too_few_examples
    assert error["code"] == "prompt_completion_format" and error["line"] == 1
    assert "all 151 lines" in error["message"]
    run_shell(command_in(error["message"], "jq -c").replace("data.jsonl", "old.jsonl"), tmp_path)
    converted = validate_file(tmp_path / "chat.jsonl")
    assert converted.ok and converted.stats["examples"] == 151


def test_other_errors_in_a_prompt_completion_file_are_still_listed(tmp_path: Path) -> None:
    pairs = [json.dumps({"prompt": f"Item {i}?", "completion": f"{i}"}) for i in range(30)]
    pairs[7] = '{"prompt": "broken'
    path = tmp_path / "old.jsonl"
    path.write_text("\n".join(pairs) + "\n")
    report = validate_file(path)
    shown = [(e["line"], e["code"]) for e in report.to_dict()["errors"]]
    assert shown == [(1, "prompt_completion_format"), (8, "not_json")]
    assert "29 of the 30 lines" in report.to_dict()["errors"][0]["message"]


# ------------------------------------------------------------------------------- pretty-printed


@needs_jq
def test_pretty_printed_examples_are_one_error(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text("\n".join(json.dumps(example(i), indent=2) for i in range(30)) + "\n")
    lines = path.read_text().count("\n")
    error = only_error(validate_file(path))  # before: one error per line
    assert error["code"] == "pretty_printed_json" and error["line"] == 1
    assert f"lines 1-{lines}" in error["message"] and "from line 1 to line 16" in error["message"]
    run_shell(command_in(error["message"], "jq -c"), tmp_path)
    assert validate_file(tmp_path / "data.jsonl").stats["examples"] == 30


# ------------------------------------------------------------------------------- no false alarms


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ("[1, 2", "not_json"),  # looks like an array opening
        ("prompt,completion", "not_json"),  # looks like a CSV header
        ('{"messages": [', "not_json"),  # looks like a pretty-printed object
        ('{"prompt": "a", "completion": "b"}', "missing_messages"),
        ("[]", "not_object"),
    ],
)
def test_a_good_file_with_one_stray_first_line_keeps_its_line_error(
    tmp_path: Path, first: str, code: str
) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(first + "\n" + jsonl([example(i) for i in range(20)]))
    report = validate_file(path)
    assert [(e.line, e.code) for e in report.errors] == [(1, code)]
    assert report.stats["examples"] == 20


def test_a_good_file_is_not_a_mistake(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(jsonl([example(i) for i in range(20)]))
    assert validate_file(path).ok
