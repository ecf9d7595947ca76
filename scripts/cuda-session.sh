#!/usr/bin/env bash
# Everything a GPU session measures, in one command on the GPU machine (after
# `bash scripts/cuda-device.sh pack` here, carrying what that script says):
#   tests  the CUDA tests and sanitizers (scripts/cuda-device.sh)
#   sweep  bench/long-context.ts against PyTorch at S = $SEQS, with a profile of one step in each
#          $PROFILE mode:S (default checkpoint:8192,mst+checkpoint:8192: where MST's 8k overhead goes)
#   attention  PyTorch's causal SDPA timed like the tests time ours (bench/attention_pytorch.py)
#   max    the largest S per mode under a $CAP GiB cap, ours and PyTorch's
#   offload  Llama3-8B bf16 mst+checkpoint at S = $OFFLOAD_SEQ (default 65536), three steps each:
#          no offload, checkpoints+optimizer with AdamW over the bus, and the same with AdamW on
#          the host's cores (MINISEQ_HOST_ADAMW=1), one after the other
#   long   (last in a call) the 1B shape's 1,048,576-token mst+checkpoint step, started detached
#          (docs/cuda.md, "The 1M-token step"; $LONG_ARGS replaces its arguments); collect it in the
#          calls after with `MINISEQ_SKIP_BUILD=1 bash scripts/cuda-device.sh collect 540`
# STAGES picks and orders them (default "tests sweep max"). Each stage copies its results to
# $OUT as soon as it ends, so a run cut short keeps what it finished: tests.txt, sweep.md,
# sweep.json, attention.txt, max.md, max.json, and every log in logs.tgz (seven files: a device
# run returns eight at most).
set -uo pipefail
cd "$(dirname "$0")/.."
final="${OUT:-/tmp/cuda-session}"
work=$(mktemp -d)
mkdir -p "$final"
keep() { cp "$1" "$final/$2" 2>/dev/null || echo "no $2 (see logs.tgz)"; tar -czf "$final/logs.tgz" -C "$work" .; }
built=""  # the first stage builds the addon; the others reuse it
for stage in ${STAGES:-tests sweep max}; do
  case "$stage" in
    tests)
      OUT=$work/tests MINISEQ_SKIP_BUILD=$built CUDA_DEVICE_BUDGET=${CUDA_DEVICE_BUDGET:-200} bash scripts/cuda-device.sh >"$work/tests.out" 2>&1
      grep -E "^(ok|FAIL|cuda timing)|passed|SUMMARY|skipped" "$work/tests.out" >"$work/tests.txt"
      keep "$work/tests.txt" tests.txt ;;
    sweep)
      OUT=$work/sweep MINISEQ_SKIP_BUILD=$built bash scripts/cuda-device.sh bench --seqs "${SEQS:-4096,8192,16384,32768,65536}" --steps 2 \
        --no-max-seq --profile "${PROFILE:-checkpoint:8192,mst+checkpoint:8192}" >"$work/sweep.out" 2>&1
      keep "$work/sweep/long-context.md" sweep.md; keep "$work/sweep/long-context.json" sweep.json ;;
    attention)
      python3 bench/attention_pytorch.py --seqs 4096,8192,32768 --dims 64,128 --out "$work/attention.json" >"$work/attention.txt" 2>&1
      keep "$work/attention.txt" attention.txt ;;
    offload)
      for run in none:0 checkpoints,optimizer:0 checkpoints,optimizer:1; do
        off=${run%%:*}; tag=offload-${off//,/+}-host${run#*:}
        # (PyTorch does not fit 64k of this model on an 80 GB card: no baseline here.)
        PYTORCH= MINISEQ_HOST_ADAMW=${run#*:} OUT=$work/$tag MINISEQ_SKIP_BUILD=$built bash scripts/cuda-device.sh bench --model llama3-8b \
          --precision bf16 --modes mst+checkpoint --seqs "${OFFLOAD_SEQ:-65536}" --steps 3 --no-max-seq --offload "$off" >"$work/$tag.out" 2>&1
        built=1
        cat "$work/$tag/long-context.md" >>"$work/offload.md" 2>/dev/null || echo "no result for $tag (see logs.tgz)" >>"$work/offload.md"
      done
      keep "$work/offload.md" offload.md ;;
    long)
      MINISEQ_SKIP_BUILD=$built bash scripts/cuda-device.sh detach ${LONG_ARGS:---model llama-3.2-1b --precision bf16-mixed \
        --seqs 1048576 --modes mst+checkpoint --steps 1 --no-max-seq --mlp-chunks 8} >"$work/long.out" 2>&1
      keep "$work/long.out" long.txt ;;
    max)
      OUT=$work/max MINISEQ_SKIP_BUILD=$built bash scripts/cuda-device.sh bench --seqs none --cap "${CAP:-32}" ${MAX_ARGS:-} >"$work/max.out" 2>&1
      keep "$work/max/long-context.md" max.md; keep "$work/max/long-context.json" max.json ;;
    *) echo "unknown stage $stage (tests, sweep, attention, max, offload, long)"; exit 2 ;;
  esac
  built=1
  echo "$stage done at ${SECONDS}s"
done
cat "$final"/*.md 2>/dev/null; tail -3 "$final/tests.txt" 2>/dev/null
