"""Benchmark /ask serving: warm latency against the seed's way, and batched throughput.

    python bench/ask.py                                   # builtin:tiny on this machine (CPU)
    python bench/ask.py --base-model Qwen/Qwen2.5-0.5B-Instruct --adapter DIR   # a GPU host

1. Latency of one request, the seed's way (load tokenizer, base and adapter with
   ``PeftModel.from_pretrained``, then generate) against a warm :class:`ModelServer` (base and
   adapter already loaded). Goal: warm >= 10x faster.
2. Throughput of 16 concurrent requests: submitted together to a batching server, against the
   same 16 answered one by one (a server with no batching). Goal: batched >= 3x.

Without ``--adapter`` a random LoRA adapter (real PEFT, r=16) is made for the base: the timing does
not depend on what an adapter learned. Every answer is capped at ``--max-new-tokens``; the figures
count the tokens actually generated. Prints the figures and the ratios to the goals.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.backends.local_serving import ModelServer, four_bit_available, load_base
from engine.backends.local_tiny import resolve_base_model
from engine.settings import BUILTIN_TINY

PROMPTS = [
    "What does the Valuline trail running shoe cost?",
    "Route this: my invoice shows a double charge.",
    "Extract the name: Hello, this is Maria Petrov writing about my order.",
    "Is the Homely Smart Lock waterproof?",
    "Summarise: the package arrived late and the box was damaged.",
    "Price of a refurbished 13 inch laptop with 16 GB memory?",
    "Which team handles password resets?",
    "Give me the order id in: order #A-1234 never arrived.",
]


def make_adapter(base_path: str, out_dir: Path, *, quantize: bool) -> Path:
    """A real PEFT LoRA adapter with random weights (so it changes answers), saved to out_dir."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, _ = load_base(base_path, quantize=False)
    torch.manual_seed(0)
    config = LoraConfig(
        r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out_dir)
    del model, peft_model
    return out_dir


def seed_way(base_path: str, adapter: Path, prompt: str, *, quantize: bool, max_new_tokens: int) -> float:
    """One request the seed's way: everything loaded for it. Returns the seconds spent loading."""
    import torch
    from peft import PeftModel

    start = time.perf_counter()
    model, tokenizer = load_base(base_path, quantize=quantize)
    model = PeftModel.from_pretrained(model, adapter)
    loading = time.perf_counter() - start
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    ).to(model.device)
    with torch.inference_mode():
        out = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False)
    del model, out
    return loading


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-model", default=BUILTIN_TINY)
    parser.add_argument(
        "--adapter", type=Path, default=None, help="adapter dir (default: a random one is made)"
    )
    parser.add_argument("--quantize", choices=["auto", "yes", "no"], default="auto")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--cold-requests", type=int, default=5)
    parser.add_argument("--warm-requests", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--window", type=float, default=0.02, help="batch collection window, seconds")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: two threads' OpenMP pools on a 2-core machine fight)",
    )
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(args.threads)

    quantize = {"auto": four_bit_available(), "yes": True, "no": False}[args.quantize]
    work = Path(tempfile.mkdtemp(prefix="ftbot-bench-ask-"))
    base_path = resolve_base_model(args.base_model, work / "builtin")
    adapter = args.adapter or make_adapter(base_path, work / "adapter", quantize=quantize)
    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "cpu"
    print(f"base={args.base_model} 4bit={quantize} device={device} torch_threads={torch.get_num_threads()}")
    print(f"max_new_tokens={args.max_new_tokens} window={args.window}s")

    # 1. Latency: a warm server vs the seed's way (cold, everything loaded per request).
    server = ModelServer(
        builtin_dir=work / "builtin",
        quantize=quantize,
        max_new_tokens=args.max_new_tokens,
        batch_window_seconds=args.window,
        max_batch_size=args.concurrency,
    )
    server.ask(PROMPTS[0], base_model=args.base_model, adapter=adapter)  # load base + adapter once
    warm = []
    for i in range(args.warm_requests):
        start = time.perf_counter()
        server.ask(PROMPTS[i % len(PROMPTS)], base_model=args.base_model, adapter=adapter)
        warm.append(time.perf_counter() - start)
    # The seed's way, after the server. With 2 torch threads on a 2-core CPU, whichever of the two
    # (main thread, generation thread) ran torch second was about 1.8x slower (42 -> 75 ms): each
    # thread gets its own OpenMP pool and the pools fight. Hence --threads 1 by default.
    seed_way(base_path, adapter, PROMPTS[0], quantize=quantize, max_new_tokens=2)  # warm the OS file cache
    cold, loads = [], []
    for i in range(args.cold_requests):
        start = time.perf_counter()
        loads.append(
            seed_way(
                base_path,
                adapter,
                PROMPTS[i % len(PROMPTS)],
                quantize=quantize,
                max_new_tokens=args.max_new_tokens,
            )
        )
        cold.append(time.perf_counter() - start)

    cold_s, warm_s = statistics.median(cold), statistics.median(warm)
    print("\n== latency of one request (median) ==")
    print(
        f"seed's way (load base + adapter, generate): {cold_s * 1000:9.1f} ms  (n={len(cold)}; "
        f"of which loading {statistics.median(loads) * 1000:.1f} ms)"
    )
    print(f"warm server:                                {warm_s * 1000:9.1f} ms  (n={len(warm)})")
    print(f"ratio: {cold_s / warm_s:.1f}x   goal >= 10x   {'MET' if cold_s / warm_s >= 10 else 'NOT MET'}")

    # 2. Throughput: N concurrent requests batched vs one by one.
    prompts = [PROMPTS[i % len(PROMPTS)] + f" (#{i})" for i in range(args.concurrency)]
    one_by_one = ModelServer(
        builtin_dir=work / "builtin",
        quantize=quantize,
        max_new_tokens=args.max_new_tokens,
        batch_window_seconds=0.0,
        max_batch_size=1,
    )
    one_by_one.ask(PROMPTS[0], base_model=args.base_model, adapter=adapter)
    start = time.perf_counter()
    futures = [one_by_one.submit(p, base_model=args.base_model, adapter=adapter) for p in prompts]
    seq_answers = [f.result() for f in futures]
    seq_s = time.perf_counter() - start
    one_by_one.close()

    server.batch_sizes.clear()
    start = time.perf_counter()
    futures = [server.submit(p, base_model=args.base_model, adapter=adapter) for p in prompts]
    batch_answers = [f.result() for f in futures]
    batch_s = time.perf_counter() - start
    server.close()
    seq_tokens = sum(a.tokens for a in seq_answers)
    batch_tokens = sum(a.tokens for a in batch_answers)
    print(f"\n== throughput of {args.concurrency} concurrent requests ==")
    print(
        f"one by one: {seq_s:7.2f} s  {args.concurrency / seq_s:7.1f} req/s  {seq_tokens / seq_s:8.0f} tok/s"
    )
    print(
        f"batched:    {batch_s:7.2f} s  {args.concurrency / batch_s:7.1f} req/s  {batch_tokens / batch_s:8.0f} tok/s"
        f"  batches={list(server.batch_sizes)}"
    )
    ratio = seq_s / batch_s
    print(f"ratio: {ratio:.1f}x   goal >= 3x   {'MET' if ratio >= 3 else 'NOT MET'}")
    same = sum(a.text == b.text for a, b in zip(seq_answers, batch_answers, strict=True))
    print(f"answers identical batched vs one by one: {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
