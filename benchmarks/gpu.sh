#!/usr/bin/env bash
# The one script a session with a lent GPU runs: the GPU rows of docs/benchmarks.md. Prepare on the dev machine,
# from the project root (both folders are git-ignored; 8 MB + 19 MB, under the 64 MiB a run may carry):
#     bash ../shared/gpu/make-wheels.sh && bash benchmarks/make-airbench-wheel.sh       # .whl/
#     mkdir -p .bench && cp ../shared/datasets/cifar10-jpeg.tar.gz .bench/               # .bench/
#     SMOKE=1 bash benchmarks/gpu.sh all          # the same steps on this CPU, a few batches each (~4 min)
# then on the GPU machine (device tool: carry [".whl", ".bench"]), two commands, each well under 10 minutes:
#     bash benchmarks/gpu.sh overhead    # timeout_s 400: two steps capped at 160 s and 180 s
#     bash benchmarks/gpu.sh speedrun    # timeout_s 360: the speedrun capped at 270 s, the sync check at 60 s
#     bash benchmarks/gpu.sh packing     # optional third (timeout_s 260): jobs_per_gpu packing, if time is left
# (caps sized from guesses, not yet timed on a GPU: 12.5 minutes at worst, leaving the 15-minute budget's rest for
# the machine's start; a step that hits its cap still leaves its per-pair/per-seed lines in its log), then give
# the machine back. $OUT gets each step's output (*.log), its numbers (*.json), steps.txt (exit codes and
# seconds) and summary.md (date, command and table rows to paste). The CPU-scale check (overhead.py --setting
# cpu_default) is measured on the dev machine, not here.
set -uo pipefail # no -e: a failed or timed-out step must not lose the other steps' results
part=${1:-all}
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/trickbench-gpu-out} # the device tool sets $OUT: what is written there comes back
mkdir -p "$OUT"

if [ "${SMOKE:-0}" = 1 ]; then # plumbing check on a CPU: the venv, a few batches, no compile
    PY=${PY:-.venv/bin/python}
    DEVICE=cpu
    SMALL=(--subset 600 --limit-batches 2 --set data.batch_size=32 --set data.eval_batch_size=64
        --data-root /tmp/trickbench-smoke-data)
    OVERHEAD_ARGS=(--warmup 0 --repeats 1 "${SMALL[@]}")
    SPEEDRUN_ARGS=(--warmup 0 --seeds 1 "${SMALL[@]}" --set compile=false --set trainer.precision=null
        --set trainer.max_epochs=4)
    SYNC_ARGS=(--subset 600 --batches 12 --set data.batch_size=16 --data-root /tmp/trickbench-smoke-data)
else
    # the image has torch and Lightning, not Hydra or airbench (../shared/gpu/README.md); PYTHONPATH, not pip -e
    PY=python3
    DEVICE=cuda
    OVERHEAD_ARGS=(--warmup 1 --repeats 3)
    SPEEDRUN_ARGS=(--warmup 1 --seeds 5)
    SYNC_ARGS=()
    if [ ! -d .site/airbench ]; then
        $PY -m pip install -q --no-index --no-deps --target .site .whl/*.whl || exit 1
    fi
    export PYTHONPATH=$PWD/.site:$PWD/src
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/env.txt" 2>&1
fi
{
    date -u
    git rev-parse HEAD 2> /dev/null
    $PY -c 'import torch, lightning; print("torch", torch.__version__, "lightning", lightning.__version__)'
} >> "$OUT/env.txt" 2>&1

step() { # step NAME SECONDS ARGS...: python ARGS under a time limit; output to $OUT/NAME.log, rows to summary.md
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    timeout -k 15 "$limit" $PY -u "$@" > "$OUT/$name.log" 2>&1
    echo "$name: exit $? after $((SECONDS - start)) s (limit $limit s)" | tee -a "$OUT/steps.txt"
    { grep -E '^([0-9]{4}-[0-9]{2}-[0-9]{2}  python|\|)' "$OUT/$name.log" || echo "$name: no table (see $name.log)"; } \
        >> "$OUT/summary.md"
    echo >> "$OUT/summary.md"
}

if [ "$part" = overhead ] || [ "$part" = all ]; then
    # warm-up inside each run of overhead.py: one untimed epoch of each side first
    for setting in resnet18_bf16 cnn12_fp32; do
        limit=$([ $setting = resnet18_bf16 ] && echo 160 || echo 180)
        step "overhead_$setting" $limit benchmarks/overhead.py --device $DEVICE --setting $setting \
            "${OVERHEAD_ARGS[@]}" --json "$OUT/overhead_$setting.json"
    done
fi
if [ "$part" = speedrun ] || [ "$part" = all ]; then
    step speedrun 270 benchmarks/speedrun.py --device $DEVICE "${SPEEDRUN_ARGS[@]}" --json "$OUT/speedrun.json"
    # README's "no host sync per step", counted by CUDA's sync debug mode on a user's ResNet-18 run
    step sync_check 60 benchmarks/sync_check.py --device $DEVICE "${SYNC_ARGS[@]}"
fi
if [ "$part" = packing ]; then # not in "all": a third command, when the budget has room (needs .bench/fashion-mnist)
    # 8 small jobs on GPU 0 with jobs_per_gpu 1, 2, 4: the sweep's wall time (python train.py -m hydra/launcher=gpus)
    step packing 240 benchmarks/scaling.py packing --device $DEVICE --jobs 8 --subset 10000 --epochs 2 \
        --json "$OUT/packing.json"
fi
cat "$OUT/summary.md"
