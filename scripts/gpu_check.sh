#!/usr/bin/env bash
# GPU check of issue 15, on one CUDA GPU, in under 8 minutes (each step has its own time limit):
#   1. torchrun --nproc_per_node=1 training of the toy task on CUDA, validating each epoch;
#   2. the same in bf16 with torch.compile;
#   3. scripts/benchmark_train.py for transformer_iwslt_de_en in bf16 on step 1's toy corpus,
#      printing tokens/s, the GEMM bound and MFU.
# Every step runs even if an earlier one failed; the script exits non-zero if any failed.
#
# Run from the repository root:  bash scripts/gpu_check.sh
# Everything goes under ${OUT:-/tmp/gpu_check}: the log ($OUT/gpu_check.log) at the top, the
# runs three folders down ($OUT/work/runs/NAME), so that only the log comes back from a machine
# that returns the top of $OUT.
#
# The toolkit runs from this checkout (PYTHONPATH), not from an install. A machine without
# hydra-core, omegaconf and antlr4 (pure Python) takes them from a folder named by
# TOOLKIT_PYDEPS (default: .pydeps), made here with, for example,
#   mkdir -p .pydeps && cp -r .venv/lib/python3.*/site-packages/{hydra,omegaconf,antlr4} .pydeps/
#
# Knobs (defaults in brackets): DEVICE [cuda], TRAIN_EXTRA [none; more training overrides,
# space-separated], BENCH_WARMUP [10], BENCH_STEPS [50], STEP_LIMITS [seconds of the three
# steps: "120 210 120"], NPROC [1], PYTHON [python3]. torchrun is run as
# "python -m torch.distributed.run" (the same program), so that it uses $PYTHON. A dry run on CPU:
#   DEVICE=cpu TRAIN_EXTRA=optimization.max_update=3 BENCH_WARMUP=1 BENCH_STEPS=2 \
#       STEP_LIMITS="300 900 900" bash scripts/gpu_check.sh
#
# Note: under torchrun with one process WORLD_SIZE is 1, and toolkit.training.distributed
# then starts no process group: step 1 checks CUDA training under torchrun, and reaches NCCL
# collectives only on a machine with two or more GPUs (NPROC=2).
set -euo pipefail

OUT="${OUT:-/tmp/gpu_check}"
WORK="$OUT/work/runs"
LOG="$OUT/gpu_check.log"
NPROC="${NPROC:-1}"
PYDEPS="${TOOLKIT_PYDEPS:-.pydeps}"
PYTHON="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
read -r -a TRAIN_EXTRA <<<"${TRAIN_EXTRA:-}"
read -r LIMIT_FP32 LIMIT_COMPILE LIMIT_BENCH <<<"${STEP_LIMITS:-120 210 120}"

mkdir -p "$OUT"
rm -rf "$WORK"  # a rerun starts afresh instead of resuming the last one's checkpoints
mkdir -p "$WORK"
: >"$LOG"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ -d "$PYDEPS" ]]; then
    export PYTHONPATH="$PYTHONPATH:$PWD/$PYDEPS"
fi

failed=()

# step NAME SECONDS COMMAND...: run COMMAND with a time limit (timeout signals its whole process
# group), its output appended to the log, not piped: a leftover child (a compile worker) holding
# a pipe open could otherwise keep the step waiting past its limit. The step's output is then
# printed too.
step() {
    local name="$1" limit="$2"
    shift 2
    echo "=== $name (limit ${limit} s): $*" | tee -a "$LOG"
    local start=$SECONDS rc=0 offset
    offset=$(stat -c %s "$LOG")
    timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1 </dev/null || rc=$?
    tail -c +$((offset + 1)) "$LOG"
    echo "=== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
    if [[ $rc -ne 0 ]]; then
        failed+=("$name")
    fi
}

{
    date -u
    git rev-parse --short HEAD 2>/dev/null || true
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
          "available", torch.cuda.is_available())'
} 2>&1 | tee -a "$LOG"

TOY=(task=toy task.toy_pairs=2000 optimization.max_epoch=2 optimization.validate_interval=1
     common.device="$DEVICE" common.log_format=simple common.log_interval=20
     ${TRAIN_EXTRA[@]+"${TRAIN_EXTRA[@]}"})

step "toy fp32, torchrun" "$LIMIT_FP32" \
    "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" -m toolkit.cli.train \
    "${TOY[@]}" checkpoint.save_dir="$WORK/toy-fp32"

step "toy bf16 + torch.compile, torchrun" "$LIMIT_COMPILE" \
    "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" -m toolkit.cli.train \
    "${TOY[@]}" common.precision=bf16 common.compile=true checkpoint.save_dir="$WORK/toy-bf16-compile"

# the toy task writes its corpus to task.destdir/toy-text, task.destdir being save_dir/data-bin
step "benchmark transformer_iwslt_de_en bf16" "$LIMIT_BENCH" \
    "$PYTHON" scripts/benchmark_train.py --arch transformer_iwslt_de_en --precision bf16 \
    --device "$DEVICE" --data "$WORK/toy-fp32/data-bin/toy-text" --source-lang src --target-lang tgt \
    --vocab-size 1000 --max-tokens 4096 --warmup "${BENCH_WARMUP:-10}" --steps "${BENCH_STEPS:-50}" --workdir "$WORK/bench"

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "FAILED: ${failed[*]}" | tee -a "$LOG"
    exit 1
fi
echo "all steps passed" | tee -a "$LOG"
