#!/usr/bin/env bash
# One prepared GPU check for a short (15-minute) lease of a GPU host: the CUDA-only tests and the
# benchmarks at a real model size (bench/shapes.py: random weights, built here, no download).
#
#   bash bench/device_check.sh                        # on the GPU host, from anywhere in the repo
#   DEVICE_CHECK_QUICK=1 bash bench/device_check.sh   # here, on the CPU: builtin:tiny, tiny counts
#
# Steps (each under `timeout`, each with its own log; a failed step does not stop the next):
#   env.txt        nvidia-smi, the Python chosen, wheels installed, library versions, the 4-bit probe
#   tests.log      tests/test_cuda.py: QLoRA on CUDA (4-bit NF4, bf16, paged_adamw_8bit), served
#                  4-bit answers equal to the seed's way in the same precision, batched on the GPU
#   ask.log        bench/ask.py --shape 1b: warm vs the seed's way; 16 batched vs one by one
#   eval.log       bench/eval.py --shape 1b: batched evaluation vs one at a time
#   train.log      bench/train.py --shape 1b: tokens/s, MFU, peak memory, ours vs the seed guide
#   train-big.log  bench/train.py --shape 8b, only when enough of the budget is left
#   scale.log      bench/scale_check.py: Ray training 2 at once vs the local queue, vLLM vs PeftModel
#                  greedy answers, /ask through vLLM vs in-process at 16 and 64 concurrent requests;
#                  only when a Python with vllm is found (DEVICE_CHECK_VLLM_PYTHON, FTBOT_VLLM_PYTHON,
#                  else python3 if it imports vllm), $PY has ray, and SCALE_NEEDS seconds are left.
#                  DEVICE_CHECK_SCALE=only skips the other steps (the whole budget goes to it); =0 never.
#   summary.txt    each step's status and time, and the figure lines of each log
# All of it goes to $OUT (the device tool sets it; default bench/out/device-out); 8 files, since
# the device tool returns at most 8.
#
# Python: .venv/bin/python when it has torch with CUDA, else the first `python3` with CUDA torch (a
# GPU image's own); wheels in $DEVICE_CHECK_WHEELS (default bench/out/wheels, made here by
# bench/device_wheels.sh; carry that folder) are installed over it with --no-index, since a GPU
# host may reach no package registry. Only when no CUDA torch is found: a venv + `pip install -e
# .[dev]` (needs a registry). DEVICE_CHECK_PYTHON overrides the choice. DEVICE_CHECK_BUDGET
# (seconds, default 540) bounds the whole run; DEVICE_CHECK_KEEP=1 keeps the work folder.

set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
OUT=${OUT:-$ROOT/bench/out/device-out} # bench/out is git-ignored: nothing travels or shows in git status
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
QUICK=${DEVICE_CHECK_QUICK:-0}
BUDGET=${DEVICE_CHECK_BUDGET:-540}
WHEELS=${DEVICE_CHECK_WHEELS:-bench/out/wheels}
START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ftbot-device-XXXXXX")
SUMMARY=$OUT/summary.txt
ENVLOG=$OUT/env.txt
: >"$SUMMARY"
: >"$ENVLOG"
if [ "${DEVICE_CHECK_KEEP:-0}" != 1 ]; then
    trap 'rm -rf "$WORK"' EXIT
fi

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false TRANSFORMERS_NO_ADVISORY_WARNINGS=1 HF_HUB_DISABLE_TELEMETRY=1
if [ "$QUICK" = 1 ]; then
    export OMP_NUM_THREADS=1 # the CPU here is small and shared
fi

elapsed() { echo $(($(date +%s) - START)); }
remaining() { echo $((BUDGET - $(elapsed))); }
note() { echo "$*" | tee -a "$SUMMARY"; }

# figures LOG REGEX: copy a log's figure lines into the summary.
figures() {
    grep -E "$2" "$1" 2>/dev/null | sed 's/^/    /' >>"$SUMMARY" || true
}

# step NAME LIMIT LOG COMMAND...: run COMMAND under timeout min(LIMIT, what is left of the budget),
# output to LOG; a status line to the summary (and the log's tail when it failed).
step() {
    local name=$1 limit=$2 log=$3
    shift 3
    local left
    left=$(remaining)
    if ((left < 30)); then
        note "== $name: SKIPPED (${left}s of the ${BUDGET}s budget left)"
        return 0
    fi
    if ((limit > left)); then
        limit=$left
    fi
    echo "\$ $* (limit ${limit}s)" >>"$log"
    local t0 rc status
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    case $rc in
    0) status=ok ;;
    124 | 137) status="TIMEOUT after ${limit}s" ;;
    *) status="FAILED (exit $rc)" ;;
    esac
    note "== $name: $status in $(($(date +%s) - t0))s (at $(elapsed)s) -> $(basename "$log")"
    if ((rc != 0)); then
        tail -n 8 "$log" | sed 's/^/    | /' >>"$SUMMARY"
    fi
    return "$rc"
}

# --------------------------------------------------------------------------------------- python

has_cuda_torch() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; }
has_torch() { "$1" -c 'import torch' >/dev/null 2>&1; }

PY=""
if [ -n "${DEVICE_CHECK_PYTHON:-}" ]; then
    PY=$DEVICE_CHECK_PYTHON # chosen by hand
elif [ -x .venv/bin/python ] && has_cuda_torch .venv/bin/python; then
    PY=.venv/bin/python
elif [ "$QUICK" = 1 ] && [ -x .venv/bin/python ] && has_torch .venv/bin/python; then
    PY=.venv/bin/python # the quick mode runs on the CPU
else
    for candidate in python3 /opt/torch/.venv/bin/python3 python; do
        if command -v "$candidate" >/dev/null && has_cuda_torch "$candidate"; then
            PY=$(command -v "$candidate")
            break
        fi
    done
fi
if [ -z "$PY" ]; then
    echo "no Python with CUDA torch found: trying a venv + pip install -e .[dev]" >>"$ENVLOG"
    if python3 -m venv "$WORK/venv" >>"$ENVLOG" 2>&1 &&
        timeout 300 "$WORK/venv/bin/python" -m pip install -q -e ".[dev]" >>"$ENVLOG" 2>&1 &&
        has_cuda_torch "$WORK/venv/bin/python"; then
        PY=$WORK/venv/bin/python
    fi
fi
if [ -z "$PY" ]; then
    note "== setup: FAILED: no Python with torch and CUDA here, and pip could not install one (see env.txt)"
    exit 1
fi

{
    echo "== nvidia-smi"
    nvidia-smi 2>&1 || echo "(nvidia-smi not available)"
    echo
    echo "== python: $PY ($("$PY" --version 2>&1))"
} >>"$ENVLOG"

# Wheels (the versions this repo is tested with) over a system Python; a venv of ours has them.
if [ "$PY" != .venv/bin/python ] && [ "$PY" != "$WORK/venv/bin/python" ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "== wheels from $WHEELS" >>"$ENVLOG"
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" "$WHEELS"/*.whl >>"$ENVLOG" 2>&1; then
        export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
        echo "installed into $WORK/site (first on PYTHONPATH)" >>"$ENVLOG"
    else
        note "== wheels: FAILED to install from $WHEELS (see env.txt); going on with what $PY has"
    fi
fi

echo "== versions" >>"$ENVLOG"
if ! "$PY" - >>"$ENVLOG" 2>&1 <<'PYTHON'; then
import importlib, sys
missing = []
for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "datasets", "accelerate",
             "tokenizers", "safetensors", "huggingface_hub", "pytest"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}  ({module.__file__})")
    except Exception as exc:
        missing.append(name)
        print(f"{name} MISSING: {type(exc).__name__}: {exc}")
import torch
print("cuda", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
if torch.cuda.is_available():
    print("bf16 supported", torch.cuda.is_bf16_supported())
sys.path.insert(0, ".")
from engine.backends.local_model import four_bit_available
print("4-bit NF4 available (the probe training and serving use):", four_bit_available())
sys.exit(1 if missing else 0)
PYTHON
    note "== env: a library is missing (see env.txt); the steps that need it will fail"
fi
figures "$ENVLOG" '^(== python|torch |transformers |peft |trl |bitsandbytes |cuda |4-bit|.* MISSING)'
note "== setup done at $(elapsed)s with $PY"

# ---------------------------------------------------------------------------------------- steps

if [ "$QUICK" = 1 ]; then
    MODEL=(--base-model builtin:tiny) # the benches default to builtin:smollm2
    NAME=builtin:tiny
    BIG_NAME="builtin:tiny (too short)"
    ASK=(--warm-requests 2 --cold-requests 1 --concurrency 4)
    EVAL=(--examples 8 --batch-size 4 --max-new-tokens 8)
    TRAIN=(--examples 64)
    BIG=(--examples 16) # too few steps for a window: checks that the bench says so
    BIG_NEEDS=30
else
    MODEL=(--shape 1b --shape-dir "$WORK/shapes")
    NAME=llama-1b
    BIG_NAME=llama-8b
    ASK=(--warm-requests 10 --cold-requests 3)
    EVAL=(--examples 32)
    TRAIN=(--examples 128 --seq-len 512)
    BIG=(--shape 8b --shape-dir "$WORK/shapes" --examples 96 --seq-len 512)
    BIG_NEEDS=300 # build 16 GB + two 4-bit loads of 8B + a few steps each
fi

SCALE=${DEVICE_CHECK_SCALE:-}
if [ "$SCALE" != only ]; then

step "tests (CUDA)" 150 "$OUT/tests.log" \
    "$PY" -m pytest tests/test_cuda.py -q -rs -p no:cacheprovider
figures "$OUT/tests.log" '(passed|failed|skipped|error)|^FAILED|^SKIPPED'

step "ask $NAME" 240 "$OUT/ask.log" "$PY" bench/ask.py "${MODEL[@]}" "${ASK[@]}"
figures "$OUT/ask.log" "^(base=|max_new|random weights|seed's way|warm server|server's first|ratio|one by one|batched|answers identical)"

step "eval $NAME" 150 "$OUT/eval.log" "$PY" bench/eval.py "${MODEL[@]}" "${EVAL[@]}"
figures "$OUT/eval.log" '^(base=|model load|random weights| *one at a time| *batched|ratio|answers identical)'

step "train $NAME" 240 "$OUT/train.log" "$PY" bench/train.py "${MODEL[@]}" "${TRAIN[@]}"
figures "$OUT/train.log" '^(model |recipe|guide|ours|tokens/s counts|ratio)'

if (($(remaining) >= BIG_NEEDS)); then
    step "train $BIG_NAME" "$(($(remaining) - 5))" "$OUT/train-big.log" "$PY" bench/train.py "${BIG[@]}"
    figures "$OUT/train-big.log" '^(model |recipe|guide|ours|tokens/s counts|ratio)'
else
    note "== train $BIG_NAME: SKIPPED ($(remaining)s left; it needs ${BIG_NEEDS}s)"
fi

fi # SCALE != only

# The scale check (bench/scale_check.py): Ray + a real vLLM server on this GPU.
SCALE_NEEDS=${DEVICE_CHECK_SCALE_NEEDS:-240}
VLLM_PY=${DEVICE_CHECK_VLLM_PYTHON:-${FTBOT_VLLM_PYTHON:-}}
if [ -z "$VLLM_PY" ] && command -v python3 >/dev/null && python3 -c 'import vllm' >/dev/null 2>&1; then
    VLLM_PY=$(command -v python3)
fi
if [ "$SCALE" = 0 ]; then
    note "== scale: SKIPPED (DEVICE_CHECK_SCALE=0)"
elif [ -z "$VLLM_PY" ]; then
    note "== scale: SKIPPED (no Python with vllm: set DEVICE_CHECK_VLLM_PYTHON)"
elif ! "$PY" -c 'import ray' >/dev/null 2>&1; then
    note "== scale: SKIPPED ($PY has no ray: pip install -e .[cluster])"
elif (($(remaining) < SCALE_NEEDS)); then
    note "== scale: SKIPPED ($(remaining)s left; it needs ${SCALE_NEEDS}s; DEVICE_CHECK_SCALE=only runs it alone)"
else
    SCALE_ARGS=()
    if [ "$QUICK" = 1 ]; then
        SCALE_ARGS=(--quick)
    fi
    # the script keeps to its own --budget; the step's timeout is the backstop
    step "scale (Ray + vLLM)" "$(($(remaining) - 5))" "$OUT/scale.log" "$PY" bench/scale_check.py \
        --budget "$(($(remaining) - 20))" --out "$WORK/scale" --vllm-python "$VLLM_PY" "${SCALE_ARGS[@]}"
    figures "$OUT/scale.log" '^(scale check|  [0-9]+ examples|== |jobs/hour|greedy answers|/ask at|    ft-)'
fi

note "== done in $(elapsed)s of the ${BUDGET}s budget; logs in $OUT"
