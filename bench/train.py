"""Benchmark training: our QLoRA recipe beside the seed guide's, same model, same data.

    python bench/train.py                                  # builtin:smollm2 on this machine (CPU)
    python bench/train.py --base-model builtin:tiny        # the tiny random model (seconds)
    python bench/train.py --base-model Qwen/Qwen2.5-0.5B-Instruct          # a GPU host
    python bench/train.py --shape 1b --seq-len 1024        # a GPU host: real-size Llama, random weights
    python bench/train.py --shape 8b --seq-len 1024 --examples 64
    python bench/train.py --shape 1b --shape-dir /tmp/shapes   # build once, reuse in ask.py/eval.py

Two recipes, each in its own child process (so peak memory is its own):

* **guide**: the seed guide's recipe and nothing else: the model in 4-bit NF4 with double
  quantization, ``prepare_model_for_kbit_training``, ``LoraConfig(r=16, alpha=32, dropout=0.05,
  q/k/v/o_proj)``, and ``SFTTrainer`` with the guide's training arguments (batch 4, accumulation 4,
  lr 2e-4, cosine, 10% warm-up, ``paged_adamw_8bit``, bf16); everything else is TRL's default
  (gradient checkpointing on, loss on every token). On a machine without CUDA the paged 8-bit
  optimizer and bf16 cannot run, so it uses ``adamw_torch`` in fp32 there (printed).
* **ours**: :func:`engine.backends.local_qlora.train` with the default :class:`TrainConfig` and
  the recipe it chooses for this model and device (engine/recipe.py: on a CPU, LoRA on fp32
  weights, the upper third of the layers, the output head on answer tokens only, batches of 8).

Measured (reference/ml-performance.md section 3): **non-padding tokens per second** over the steady
state (the first 10% of the optimizer steps, at least 2, are dropped; eval, checkpoint saves and
the model load are outside the window), and **peak memory** (``torch.cuda.max_memory_allocated``
on a GPU; the child's peak RSS on the CPU). Both runs see the same examples, epochs and batch
shape. On a GPU it also prints **MFU** = tokens/s x 4N / dense bf16 peak, N = parameters that do
matmuls (everything but the input embeddings); 4N = forward 2N + activation-gradient backward 2N
(LoRA has no weight-gradient GEMM for frozen weights); gradient checkpointing's recompute is not
counted (MFU, not HFU). ``--shape 135m|1b|8b`` builds a SmolLM2-135M / Llama-3.2-1B / Llama-3-8B
shape with random weights (speed does not depend on the weights) and builtin:tiny's tokenizer
(bench/shapes.py).

Prints one row per recipe and the ratios ours/guide. ``--json`` prints the figures as one object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.shapes import add_model_arguments, describe, resolve_model  # noqa: E402

DEFAULT_DATA = ROOT / "examples" / "labels.jsonl"


# ------------------------------------------------------------------------------------------------ data


def load_examples(path: Path, n: int, seq_len: int | None) -> list[list[dict[str, Any]]]:
    """The first ``n`` conversations of a chat JSONL file (cycled when it has fewer). With
    ``seq_len``, each user message is repeated to about that many words, so a real-size model is
    measured at a realistic length (lengths still vary from example to example)."""
    rows = [json.loads(line)["messages"] for line in path.read_text().splitlines() if line.strip()]
    out = []
    for i in range(n):
        messages = [dict(m) for m in rows[i % len(rows)]]
        if seq_len:
            for m in messages:
                if m["role"] == "user":
                    words = m["content"].split()
                    target = int(seq_len * (0.5 + (i % 5) / 10))  # 50-90% of seq_len
                    m["content"] = " ".join((words * (target // max(1, len(words)) + 1))[:target])
        out.append(messages)
    return out


# ------------------------------------------------------------------------------------------------ child


def _steady_rate(points: list[tuple[float, float]]) -> tuple[float, int]:
    """(tokens/s over the steady state, steps in the window) from (seconds, tokens seen) per step."""
    skip = max(2, len(points) // 10)
    if len(points) - skip < 2:
        skip = max(0, len(points) - 2)
    (t0, n0), (t1, n1) = points[skip], points[-1]
    return ((n1 - n0) / (t1 - t0) if t1 > t0 else 0.0), len(points) - 1 - skip


def _peak_memory_gb() -> tuple[float, str]:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9, "GPU allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, "process RSS"  # KiB -> GB


def _measurement(
    recipe: str, points: list[tuple[float, float]], *, gradient_checkpointing: bool
) -> dict[str, Any]:
    """What both recipes report after training: speed over the steady state, steps, tokens and
    peak memory, from (seconds, tokens seen) per step."""
    rate, window = _steady_rate(points)
    memory, memory_kind = _peak_memory_gb()
    return {
        "recipe": recipe,
        "tokens_per_second": rate,
        "window_steps": window,
        "steps": len(points),
        "tokens": points[-1][1] if points else 0.0,
        "peak_memory_gb": memory,
        "memory_kind": memory_kind,
        "gradient_checkpointing": gradient_checkpointing,
    }


def run_guide(base: str, examples: list[list[dict[str, Any]]], epochs: int, out: Path) -> dict[str, Any]:
    """The seed guide's recipe. The callback only measures; it changes nothing in training."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    substitutions = [] if cuda else ["optim adamw_torch instead of paged_adamw_8bit", "fp32 instead of bf16"]
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(
        base,
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if cuda else torch.float32,
        ),
        device_map={"": 0} if cuda else None,
    )
    model = prepare_model_for_kbit_training(model)
    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    args = SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=4,
        learning_rate=2e-4,
        num_train_epochs=epochs,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        optim="paged_adamw_8bit" if cuda else "adamw_torch",
        bf16=cuda,
        use_cpu=not cuda,
        report_to="none",
        save_strategy="no",  # measurement: no checkpoint writes inside the window for either recipe
        include_num_input_tokens_seen="non_padding",  # measurement: counts real tokens, changes nothing
        disable_tqdm=True,
    )
    points: list[tuple[float, float]] = []
    start = time.perf_counter()

    class Meter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if cuda:
                torch.cuda.synchronize()
            points.append((time.perf_counter() - start, float(state.num_input_tokens_seen)))

    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([{"messages": m} for m in examples]),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[Meter()],
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    return {
        **_measurement("guide", points, gradient_checkpointing=bool(args.gradient_checkpointing)),
        "substitutions": substitutions,
    }


def run_ours(base: str, examples: list[list[dict[str, Any]]], epochs: int, out: Path) -> dict[str, Any]:
    import torch

    from engine.backends.local_qlora import train
    from engine.config import parse_options
    from engine.progress import ListSink

    sink = ListSink()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = train(
        job_id="bench",
        base_model=base,
        train_examples=examples,
        eval_examples=[],
        config=parse_options({"epochs": str(epochs)}),
        output_dir=out,
        sink=sink,
        should_stop=lambda: False,
    )
    steps = [e for e in sink.events if e.kind == "step"]
    points = [(e.metrics["elapsed_seconds"], e.metrics["tokens_seen"]) for e in steps]
    return {
        **_measurement(
            "ours", points, gradient_checkpointing=bool(result.resolved.get("gradient_checkpointing"))
        ),
        "quantized": result.quantized,
        "resolved": {k: v for k, v in result.resolved.items() if k != "versions"},
    }


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    examples = load_examples(Path(args.data), args.examples, args.seq_len)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        runner = run_guide if args.child == "guide" else run_ours
        figures = runner(args.base_model, examples, args.epochs, Path(tmp))
    print("BENCH_RESULT " + json.dumps(figures))


# ------------------------------------------------------------------------------------------------ parent


def _ratio(a: float, b: float) -> float:
    """a / b, or NaN when b is 0 (a run too short to measure prints nan rather than crashing)."""
    return a / b if b else float("nan")


def spawn(recipe: str, base: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        recipe,
        "--base-model",
        base,
        "--data",
        str(args.data),
        "--examples",
        str(args.examples),
        "--epochs",
        str(args.epochs),
        "--threads",
        str(args.threads),
    ]
    if args.seq_len:
        command += ["--seq-len", str(args.seq_len)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line.removeprefix("BENCH_RESULT "))
    raise SystemExit(f"the {recipe} run failed:\n{done.stderr[-4000:]}")


def model_facts(base: str) -> dict[str, Any]:
    from engine.backends.local_preflight import device_info, model_shape
    from engine.config import TrainConfig

    shape = model_shape(base, TrainConfig())
    embeddings = shape.vocab_size * shape.hidden_size
    return {
        "params": shape.total_params,
        "matmul_params": shape.total_params - embeddings,
        "device": device_info(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser, default_base="builtin:smollm2")
    parser.add_argument(
        "--data", default=str(DEFAULT_DATA), help="chat JSONL file (default: examples/labels.jsonl)"
    )
    parser.add_argument("--examples", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--seq-len", type=int, default=None, help="stretch user messages to about this many words"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per recipe, alternating; the median counts"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the CPU may be shared)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=["guide", "ours"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        base, _label = resolve_model(args, Path(tmp))
        facts = model_facts(base)
        runs: dict[str, list[dict[str, Any]]] = {"guide": [], "ours": []}
        for _ in range(args.repeats):
            for recipe in ("guide", "ours"):
                runs[recipe].append(spawn(recipe, base, args))

    device = facts["device"]
    peak = device.get("peak_tflops")
    summary: dict[str, Any] = {
        "model": describe(args.shape) if args.shape else args.base_model,
        "params": facts["params"],
        "device": device.get("name"),
        "examples": args.examples,
        "epochs": args.epochs,
        "recipes": {},
    }
    for recipe, results in runs.items():
        rate = statistics.median(r["tokens_per_second"] for r in results)
        runs_rates = [r["tokens_per_second"] for r in results]
        # best: on a shared CPU other work only ever slows a run down, so the best run is the
        # least disturbed one; the median is reported beside it.
        row = dict(
            results[0], tokens_per_second=rate, best_tokens_per_second=max(runs_rates), runs=runs_rates
        )
        row["peak_memory_gb"] = statistics.median(r["peak_memory_gb"] for r in results)
        if peak:
            row["mfu"] = rate * 4 * facts["matmul_params"] / (peak * 1e12)
        summary["recipes"][recipe] = row
    ours, guide = summary["recipes"]["ours"], summary["recipes"]["guide"]
    summary["ratio_tokens_per_second"] = _ratio(ours["tokens_per_second"], guide["tokens_per_second"])
    summary["ratio_best_tokens_per_second"] = _ratio(
        ours["best_tokens_per_second"], guide["best_tokens_per_second"]
    )
    summary["ratio_peak_memory"] = _ratio(ours["peak_memory_gb"], guide["peak_memory_gb"])

    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"model {summary['model']} ({facts['params'] / 1e6:,.1f}M params) on {summary['device']}, "
        f"{args.examples} examples x {args.epochs} epoch(s), {args.repeats} run(s) per recipe"
    )
    print(
        f"{'recipe':<7} {'tokens/s median':>16} {'best':>8} {'peak mem GB':>12} {'steps':>6} {'grad ckpt':>9} {'MFU':>7}"
    )
    for name in ("guide", "ours"):
        row = summary["recipes"][name]
        mfu = f"{row['mfu']:.1%}" if "mfu" in row else "n/a"
        print(
            f"{name:<7} {row['tokens_per_second']:>16,.0f} {row['best_tokens_per_second']:>8,.0f} "
            f"{row['peak_memory_gb']:>12.3f} {row['steps']:>6} "
            f"{'on' if row['gradient_checkpointing'] else 'off':>9} {mfu:>7}"
        )
    print(f"tokens/s counts non-padding tokens; memory measured as {ours['memory_kind']}")
    for name in ("guide", "ours"):
        if summary["recipes"][name]["window_steps"] < 1:
            print(
                f"{name}: too few optimizer steps ({summary['recipes'][name]['steps']}) for a steady-state "
                "window: raise --examples (the guide's effective batch is 16)"
            )
    if guide.get("substitutions"):
        print("guide recipe on this machine: " + "; ".join(guide["substitutions"]))
    print(
        f"ratio ours/guide: tokens/s {summary['ratio_tokens_per_second']:.2f}x (median), "
        f"{summary['ratio_best_tokens_per_second']:.2f}x (best), "
        f"peak memory {summary['ratio_peak_memory']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
