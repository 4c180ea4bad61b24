"""``ftbot validate``: exit codes, the JSON contract, the readable report, exact token counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import main
from engine import Settings

DATA = Path(__file__).parent / "data"


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["validate", *args], env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_usable_file_exits_0_with_a_readable_report() -> None:
    code, out, _ = run(str(DATA / "good_labels.jsonl"))
    assert code == 0
    assert "usable - 120 examples" in out and "label" in out
    assert "estimated" in out  # no tokenizer given
    assert "Next: ftbot run" in out


def test_unusable_file_exits_1_and_lists_every_error_with_its_line() -> None:
    code, out, _ = run(str(DATA / "every_error.jsonl"))
    assert code == 1
    assert "NOT usable" in out
    expected = json.loads((DATA / "every_error.codes.json").read_text())
    for line in expected:
        assert f"Line {line}:" in out


@pytest.mark.parametrize(
    ("name", "ok", "code"),
    [
        ("good_labels.jsonl", True, None),
        ("bom_crlf.jsonl", True, None),
        ("image.png.jsonl", False, "binary_file"),
        ("utf16.jsonl", False, "not_utf8"),
        ("empty.jsonl", False, "empty_file"),
        ("too_few.jsonl", False, "too_few_examples"),
    ],
)
def test_json_output_is_one_object_per_the_contract(name: str, ok: bool, code: str | None) -> None:
    exit_code, out, _ = run("--json", str(DATA / name))
    assert exit_code == (0 if ok else 1)
    obj = json.loads(out)  # exactly one JSON document on stdout
    assert set(obj) == {"ok", "errors", "warnings", "stats"}
    assert obj["ok"] is ok
    assert isinstance(obj["stats"]["examples"], int)
    for e in obj["errors"]:
        assert set(e) == {"line", "code", "message"}
    for w in obj["warnings"]:
        assert set(w) == {"code", "message", "lines"}
    if code:
        assert [e["code"] for e in obj["errors"]] == [code]


def test_warnings_in_json() -> None:
    exit_code, out, _ = run("--json", str(DATA / "warnings.jsonl"))
    assert exit_code == 0
    warnings = {w["code"]: w["lines"] for w in json.loads(out)["warnings"]}
    assert warnings["duplicates"] == [4] and warnings["conflicting_answers"] == [3, 6]


def test_missing_file_or_directory_is_a_usage_error(tmp_path: Path) -> None:
    code, out, err = run(str(tmp_path / "nope.jsonl"))
    assert code == 2 and "No such file" in err and out == ""
    code, _, err = run(str(tmp_path))
    assert code == 2
    code, _, _ = run()
    assert code == 2


def test_bad_settings_are_a_usage_error(tmp_path: Path) -> None:
    env = {"FTBOT_HOME": str(tmp_path), "FTBOT_SERVE_MAX_BASES": "many"}
    code, _, err = run("--base-model", "builtin:tiny", str(DATA / "good_labels.jsonl"), env=env)
    assert code == 2 and "FTBOT_SERVE_MAX_BASES" in err


def test_unloadable_base_model_is_a_usage_error(tmp_path: Path) -> None:
    env = {"FTBOT_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    code, _, err = run(
        "--base-model", str(tmp_path / "no-such-model"), str(DATA / "good_labels.jsonl"), env=env
    )
    assert code == 2 and "Could not load the tokenizer" in err


def test_base_model_gives_exact_token_counts(settings: Settings) -> None:
    env = {"FTBOT_HOME": str(settings.home)}
    code, out, _ = run("--json", "--base-model", "builtin:tiny", str(DATA / "tools.jsonl"), env=env)
    assert code == 0
    stats = json.loads(out)["stats"]
    assert stats["tokens_estimated"] is False
    assert stats["tokenizer"].startswith("builtin:tiny")
    assert stats["max_length"] == 2048  # the tiny model's context
    assert stats["tokens_per_example"]["min"] > 0
    code, out, _ = run("--base-model", "builtin:tiny", str(DATA / "good_labels.jsonl"), env=env)
    assert code == 0 and "builtin:tiny" in out and "estimated" not in out


def test_validate_without_base_model_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from bot.cli import main\n"
        f"try:\n    main(['validate', '--json', {str(DATA / 'good_labels.jsonl')!r}])\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr.strip().splitlines()[-1] == "False False"


def test_python_dash_m_bot_validate() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bot", "validate", "--json", str(DATA / "image.png.jsonl")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1
    assert json.loads(out.stdout)["errors"][0]["code"] == "binary_file"


def test_a_json_array_file_is_one_error_in_the_json_contract(tmp_path: Path) -> None:
    # Issue 12: a JSON array of 500 examples gave thousands of line errors.
    example = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    path = tmp_path / "data.json"
    path.write_text(json.dumps([example] * 500, indent=2))
    exit_code, out, _ = run("--json", str(path))
    assert exit_code == 1
    obj = json.loads(out)
    assert set(obj) == {"ok", "errors", "warnings", "stats"} and obj["ok"] is False
    (error,) = obj["errors"]
    assert set(error) == {"line", "code", "message"}
    assert error["line"] == 1 and error["code"] == "json_array_file" and "jq -c '.[]'" in error["message"]
    code, text, _ = run(str(path))
    assert code == 1 and "NOT usable - 1 error(s)" in text


def test_the_same_error_on_many_lines_is_printed_once(tmp_path: Path) -> None:
    good = (DATA / "good_labels.jsonl").read_text()
    path = tmp_path / "data.jsonl"
    path.write_text(good + '{"messages": [{"role": "assistent", "content": "x"}]}\n' * 60)
    code, out, _ = run(str(path))
    assert code == 1 and "NOT usable - 60 error(s)" in out
    assert out.count("assistent") == 1 and 'Did you mean "assistant"?' in out
    assert "Lines 121, 122, 123, 124, 125, 126, 127, 128, 129, 130 and 50 more (60 lines)" in out
    code, out, _ = run("--json", str(path))
    (error,) = json.loads(out)["errors"]
    assert code == 1 and error["line"] == 121 and error["code"] == "unknown_role"
