"""Benchmark evaluation generation: batched (``generate_batch``) against one prompt at a time.

    python bench/eval.py                                    # builtin:smollm2, examples/prices.jsonl
    python bench/eval.py --base-model builtin:tiny          # the tiny random model (seconds)
    python bench/eval.py --examples 16 --batch-size 8       # quick
    python bench/eval.py --shape 1b --examples 32           # a GPU host, offline: random-weight Llama-3.2-1B
    python bench/eval.py --base-model Qwen/Qwen2.5-0.5B-Instruct --examples 256   # a GPU host

Answers the first ``--examples`` eval prompts of a dataset (each example without its last
assistant turn, as the evaluation does) with the same model twice: ``batch_size=1`` (the seed's
loop) and ``batch_size=--batch-size``. Goal: batched >= 4x faster. Also reports how many answers
are identical (greedy decoding; left padding may flip a near-tie on a few rows). The model is
loaded as the evaluation loads it (:func:`load_base`: with ``--quantize auto``, 4-bit on a GPU
where bitsandbytes can, full precision on a CPU); the load time is printed apart from the timings. Token counts are generated
token ids up to a stop token; random weights (builtin:tiny, ``--shape``, see bench/shapes.py) never
learned to stop, so their answers run to ``--max-new-tokens`` and the printout says how many did.
On CUDA each timed region ends with ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.shapes import add_model_arguments, resolve_model
from engine.backends.local_generation import generate_detailed
from engine.backends.local_model import four_bit_available, load_base
from engine.prompts import eval_prompt
from engine.settings import BUILTIN_SMOLLM2, BUILTIN_TINY

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser, default_base=BUILTIN_SMOLLM2)
    parser.add_argument("--dataset", type=Path, default=ROOT / "examples" / "prices.jsonl")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--quantize", choices=["auto", "yes", "no"], default="auto")
    args = parser.parse_args()

    import torch

    def synchronize() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    quantize = {"auto": torch.cuda.is_available() and four_bit_available(), "yes": True, "no": False}[
        args.quantize
    ]
    scratch = tempfile.TemporaryDirectory(prefix="ftbot-bench-eval-")  # removed at exit
    work = Path(scratch.name)
    base_path, model_label = resolve_model(args, work)
    with args.dataset.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()][: args.examples]
    conversations = [eval_prompt(row["messages"]) for row in rows]
    start = time.perf_counter()
    model, tokenizer = load_base(base_path, quantize=quantize)
    synchronize()
    load_s = time.perf_counter() - start
    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "cpu"
    print(
        f"base={model_label} 4bit={quantize} device={device} torch_threads={torch.get_num_threads()} "
        f"dataset={args.dataset.name} examples={len(conversations)} max_new_tokens={args.max_new_tokens}"
    )
    print(f"model load (not in the timings): {load_s:.2f} s")
    if args.shape or args.base_model == BUILTIN_TINY:
        print(
            "random weights: answers run to max_new_tokens unless a stop token comes by chance; "
            "tokens are counted as generated token ids"
        )
    generate_detailed(model, tokenizer, conversations[:2], max_new_tokens=2, batch_size=2)  # warm up
    synchronize()

    figures = {}
    results = {}
    for label, batch_size in (("one at a time", 1), (f"batched ({args.batch_size})", args.batch_size)):
        start = time.perf_counter()
        results[label] = generate_detailed(
            model, tokenizer, conversations, max_new_tokens=args.max_new_tokens, batch_size=batch_size
        )
        synchronize()
        seconds = time.perf_counter() - start
        tokens = sum(r.tokens for r in results[label])
        at_cap = sum(r.finish_reason == "length" for r in results[label])
        figures[label] = seconds
        print(
            f"{label:>15}: {seconds:7.2f} s  {len(conversations) / seconds:7.1f} examples/s  {tokens / seconds:8.0f} tok/s"
            f"  ({tokens} tokens; {at_cap}/{len(conversations)} ran to max_new_tokens)"
        )
    single, batched = figures.values()
    ratio = single / batched
    print(f"ratio: {ratio:.1f}x   goal >= 4x   {'MET' if ratio >= 4 else 'NOT MET'}")
    a, b = results.values()
    same = sum(x.text == y.text for x, y in zip(a, b, strict=True))
    caveat = "  (texts: a random shape's token ids mostly decode to nothing)" if args.shape else ""
    print(f"answers identical batched vs one at a time: {same}/{len(conversations)}{caveat}")


if __name__ == "__main__":
    main()
