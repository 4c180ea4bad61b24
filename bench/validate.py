"""Benchmark of dataset validation (engine/dataset.py) against a naive reference.

Generates a chat JSONL file (1 GiB by default) in a temporary directory (deleted afterwards) and
measures, each in a fresh child process so peak RSS is the pass's own:

1. the structural pass: ``validate_file(path)`` (every check, token sizes estimated), MiB/s and
   peak RSS;
2. the naive reference: stdlib ``json.loads`` per line with the same checks written plainly
   (dicts/sets for duplicates), MiB/s and peak RSS, and the ratio;
3. token counting: ``validate_file(path, token_counter=...)`` with the base model's tokenizer and
   chat template (``builtin:tiny`` by default) on the first ``--tokens-mb`` MiB, examples/s.

Goal (issue 2): at least 150 MiB/s structural on one core; peak RSS under 150 MiB on 1 GiB.

    .venv/bin/python bench/validate.py               # 1 GiB
    .venv/bin/python bench/validate.py --size-mb 64  # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_WORDS = (
    "the a and of to in for with on is are this that price product customer order shipping delivery "
    "refund account please thanks estimate model size color black white wireless laptop phone camera "
    "battery screen warranty storage memory new used refurbished condition box original charger "
    "scratches minor excellent good fair works perfectly tested returned seller listing photos"
).split()
_ACCENTED = "café naïve déjà vu prix €49 größe über señor 価格 商品 送料 배송".split()


def _sentence(rng: random.Random, words: int, non_ascii: bool) -> str:
    out = [rng.choice(_WORDS) for _ in range(words)]
    if non_ascii:
        for _ in range(max(1, words // 12)):
            out[rng.randrange(words)] = rng.choice(_ACCENTED)
    return " ".join(out).capitalize() + "."


def generate(path: Path, size_mb: float, seed: int = 0) -> int:
    """Write about ``size_mb`` MiB of realistic chat JSONL (system/user/assistant, ~1.6 KB a line,
    ~10% of lines with non-ASCII text, half the answers in paragraphs, every prompt unique).
    Returns the number of lines."""
    rng = random.Random(seed)
    systems = [
        "You are a pricing assistant for a second-hand electronics shop. Answer with a short, friendly "
        "estimate and one sentence of reasoning.",
        "You estimate resale prices. Be concise.",
    ]
    users = []
    answers = []
    for i in range(3000):
        non_ascii = i % 10 == 0
        users.append(
            " ".join(_sentence(rng, rng.randint(8, 24), non_ascii) for _ in range(rng.randint(6, 14)))
        )
        # Half the answers have several paragraphs (\n escapes in the JSON), as real answers do.
        answers.append(
            (" " if i % 2 else "\n\n").join(
                _sentence(rng, rng.randint(8, 20), non_ascii) for _ in range(rng.randint(2, 5))
            )
        )
    target = int(size_mb * 2**20)
    written = lines = 0
    dumps = json.dumps
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        buf: list[str] = []
        while written < target:
            i = lines
            record = {
                "messages": [
                    {"role": "system", "content": systems[0] if i % 50 else systems[1]},
                    {"role": "user", "content": f"Listing #{i}: {users[i % 3000]}"},
                    {"role": "assistant", "content": f"${10 + i % 990}. {answers[(i * 7) % 3000]}"},
                ]
            }
            line = dumps(record, ensure_ascii=False) + "\n"
            buf.append(line)
            written += len(line.encode("utf-8")) if not line.isascii() else len(line)
            lines += 1
            if len(buf) >= 4096:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))
    return lines


# The naive reference, run in a child process: json.loads per line, the same checks written plainly.
_NAIVE = r"""
import json, sys
ROLES = {"system", "user", "assistant", "tool"}
path = sys.argv[1]
errors = []
examples = 0
seen = {}          # prompt -> {answer: first line}
dups = conflicts = 0
tokens = []
with open(path, "rb") as f:
    for n, raw in enumerate(f, 1):
        if not raw.strip():
            continue
        if len(raw) > 8 * 2**20:
            errors.append((n, "line_too_long")); continue
        try:
            text = raw.decode("utf-8").lstrip("\ufeff")
        except UnicodeDecodeError:
            errors.append((n, "not_utf8")); continue
        if text.count("[") + text.count("{") > 64:
            errors.append((n, "maybe_too_deep"))
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            errors.append((n, "not_json")); continue
        if not isinstance(obj, dict):
            errors.append((n, "not_object")); continue
        msgs = obj.get("messages")
        if not isinstance(msgs, list) or not msgs:
            errors.append((n, "messages")); continue
        ok = True
        last = -1
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                ok = False; break
            c = m.get("content")
            if not (isinstance(c, str) or isinstance(c, list) or (c is None and m.get("tool_calls"))):
                ok = False; break
            if m["role"] == "assistant":
                if isinstance(c, str) and not c.strip() and not m.get("tool_calls"):
                    ok = False; break
                last = i
            if "weight" in m and m["weight"] not in (0, 1):
                ok = False; break
        if not ok or last < 0:
            errors.append((n, "example")); continue
        examples += 1
        prompt = json.dumps(msgs[:last], sort_keys=True)
        answer = msgs[last].get("content")
        answer = answer if isinstance(answer, str) else json.dumps(answer)
        tokens.append(sum(len(str(m.get("content") or "")) for m in msgs) // 4)
        by_answer = seen.setdefault(prompt, {})
        if answer in by_answer:
            dups += 1
        else:
            if by_answer:
                conflicts += 1
            by_answer[answer] = n
tokens.sort()
"""

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
mode, path = sys.argv[2], sys.argv[3]
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
if mode == "fast":  # imports are not part of the pass
    import engine.evaluate
    from engine.dataset import validate_file
t0, cpu0 = time.perf_counter(), cpu()
result = {}
if mode == "naive":
    sys.argv = ["naive", path]
    exec(compile(NAIVE, "naive", "exec"), {"__name__": "naive"})
elif mode == "fast":
    r = validate_file(path)
    result = {"ok": r.ok, "examples": r.examples}
else:
    from pathlib import Path
    from engine.backends.local_model import token_counter_for
    counter = token_counter_for(sys.argv[4], Path(sys.argv[5]))
    t0, cpu0 = time.perf_counter(), cpu()  # the tokenizer load is not part of the rate
    from engine.dataset import validate_file
    r = validate_file(path, token_counter=counter)
    result = {"ok": r.ok, "examples": r.examples, "estimated": r.stats["tokens_estimated"]}
result["seconds"] = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_SELF)
result["cpu_seconds"] = usage.ru_utime + usage.ru_stime - cpu0
result["maxrss_mib"] = usage.ru_maxrss / 1024
print(json.dumps(result))
"""


def _run_child(mode: str, path: Path, *extra: str) -> dict:
    code = _CHILD.replace("NAIVE", repr(_NAIVE))
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), mode, str(path), *extra],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{mode} pass failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _prefix(src: Path, dst: Path, size_mb: float) -> int:
    """Copy whole lines from the start of ``src`` up to ``size_mb`` MiB; returns the line count."""
    limit = int(size_mb * 2**20)
    n = written = 0
    with open(src, "rb") as f, open(dst, "wb") as out:
        for line in f:
            if written + len(line) > limit and n:
                break
            out.write(line)
            written += len(line)
            n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=float, default=1024, help="size of the generated file (MiB)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement; the best is kept")
    parser.add_argument(
        "--tokens-mb", type=float, default=8, help="MiB validated with token counting (0: skip)"
    )
    parser.add_argument("--base-model", default="builtin:tiny", help="tokenizer for the token-counting pass")
    parser.add_argument(
        "--builtin-dir", default=None, help="where builtin:tiny is built (default: a temp dir)"
    )
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="ftbot-bench-") as tmp:
        path = Path(tmp) / "bench.jsonl"
        t0 = time.perf_counter()
        lines = generate(path, args.size_mb)
        size = path.stat().st_size
        mib = size / 2**20
        print(
            f"generated {mib:.0f} MiB, {lines} lines ({size / lines:.0f} B/line) in {time.perf_counter() - t0:.1f}s"
        )

        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(
            f"python {sys.version.split()[0]}, one process each, page cache warm; best of {args.repeat}; "
            f"load average {load:.1f} on {os.cpu_count()} CPUs"
        )
        print("rates: wall clock, and per CPU second (what one core does when other work shares the machine)")

        def best(mode: str, *extra: str, target: Path = path) -> dict:
            """Each figure's best over the runs (the machine may be shared), peak RSS the worst."""
            runs = [_run_child(mode, target, *extra) for _ in range(max(1, args.repeat))]
            out = dict(runs[0])
            out["seconds"] = min(r["seconds"] for r in runs)
            out["cpu_seconds"] = min(r["cpu_seconds"] for r in runs)
            out["maxrss_mib"] = max(r["maxrss_mib"] for r in runs)
            return out

        def rates(r: dict, mib: float, items: int) -> str:
            return (
                f"{mib / r['seconds']:7.1f} MiB/s wall, {mib / r['cpu_seconds']:7.1f} MiB/s per CPU-s, "
                f"{items / r['cpu_seconds']:8.0f} lines/CPU-s, peak RSS {r['maxrss_mib']:5.0f} MiB"
            )

        fast = best("fast")
        print(f"structural pass (engine.dataset.validate_file): {rates(fast, mib, lines)}  ok={fast['ok']}")
        fast_cpu_rate = mib / fast["cpu_seconds"]
        if not args.skip_naive:
            naive = best("naive")
            print(f"naive reference (json.loads per line):          {rates(naive, mib, lines)}")
            print(
                f"ratio structural / naive: {naive['cpu_seconds'] / fast['cpu_seconds']:.2f}x throughput "
                f"(CPU time), {naive['seconds'] / fast['seconds']:.2f}x (wall), "
                f"{naive['maxrss_mib'] / fast['maxrss_mib']:.1f}x less peak memory"
            )
        goal_speed = "met" if fast_cpu_rate >= 150 else "NOT met"
        goal_rss = "met" if fast["maxrss_mib"] < 150 else "NOT met"
        print(
            f"goal >=150 MiB/s on one core: {goal_speed} ({fast_cpu_rate:.0f} MiB/s per CPU-s); "
            f"goal peak RSS <150 MiB: {goal_rss} ({fast['maxrss_mib']:.0f} MiB on {mib:.0f} MiB)"
        )

        if args.tokens_mb > 0:
            part = Path(tmp) / "tokens.jsonl"
            n = _prefix(path, part, min(args.tokens_mb, args.size_mb))
            builtin = args.builtin_dir or str(Path(tmp) / "builtin")
            tok = _run_child("tokens", part, args.base_model, builtin)
            part_mib = part.stat().st_size / 2**20
            print(
                f"with token counting ({args.base_model} tokenizer + chat template, {part_mib:.0f} MiB, "
                f"{n} examples): {n / tok['seconds']:.0f} examples/s wall, "
                f"{n / tok['cpu_seconds']:.0f} examples/CPU-s, {part_mib / tok['cpu_seconds']:.1f} MiB/CPU-s, "
                f"peak RSS {tok['maxrss_mib']:.0f} MiB (torch + transformers loaded)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
