#!/usr/bin/env bash
# one device call: the CUDA suites (host tier included), then offload throughput with and without
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/out}"; mkdir -p "$out"
free -g > "$out/free.txt"; nproc >> "$out/free.txt"
SECONDS=0
CUDA_DEVICE_BUDGET=200 bash scripts/cuda-device.sh > "$out/tests-stdout.log" 2>&1
echo "tests done at ${SECONDS}s"; tail -5 "$out/summary.txt"
source .device/setup.sh >/dev/null 2>&1
export PATH="$PATH:/usr/local/cuda/bin" MINISEQ_CUDA=1 MINISEQ_CUDA_ADDON="$PWD/build/Release/miniseq_cuda.node"
cublas=$(ldconfig -p | grep -o '/.*libcublas\.so\.13$' | head -1); [ -n "$cublas" ] && export MINISEQ_CUBLAS_DIR="$(dirname "$cublas")"
lc() { NODE_OPTIONS=--max-old-space-size=16000 timeout "$1" node .device/cuda/long-context.mjs "${@:2}" --no-max-seq; }
for off in none checkpoints,optimizer; do
  tag=${off//,/+}
  lc 90 --model llama-3.2-1b --precision bf16-mixed --seqs 32768,65536 --modes mst+checkpoint --steps 3 --offload $off --out "$out/off-1b-$tag" > "$out/off-1b-$tag.log" 2>&1
  echo "1b $off done at ${SECONDS}s"; grep -E "S=" "$out/off-1b-$tag.log"
done
for off in none checkpoints,optimizer; do
  tag=${off//,/+}
  lc 170 --model llama3-8b --precision bf16 --seqs 32768,65536 --modes mst+checkpoint --steps 2 --offload $off --out "$out/off-8b-$tag" > "$out/off-8b-$tag.log" 2>&1
  echo "8b $off done at ${SECONDS}s"; grep -E "S=" "$out/off-8b-$tag.log"
done
cd "$out" && tar -czf all.tgz --exclude=all.tgz . && ls
