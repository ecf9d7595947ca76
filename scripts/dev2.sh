#!/usr/bin/env bash
# the longest offloaded steps, detached: Llama3-8B bf16 then bf16-mixed, largest S under 79 GiB and a host cap
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/out}"; mkdir -p "$out"
long=/tmp/long; mkdir -p $long
source .device/setup.sh >/dev/null 2>&1
export PATH="$PATH:/usr/local/cuda/bin" MINISEQ_CUDA=1 MINISEQ_CUDA_ADDON="$PWD/build/Release/miniseq_cuda.node"
cublas=$(ldconfig -p | grep -o '/.*libcublas\.so\.13$' | head -1); [ -n "$cublas" ] && export MINISEQ_CUBLAS_DIR="$(dirname "$cublas")"
if [ ! -f build/Release/miniseq_cuda.node ]; then node native/build.mjs --direct --strict > $long/build.log 2>&1; fi
cat > $long/run.sh <<'IN'
cd "$1"
for spec in "bf16 96" "bf16-mixed 112"; do
  set -- $spec
  NODE_OPTIONS=--max-old-space-size=16000 node .device/cuda/long-context.mjs --model llama3-8b --precision $1 --seqs none \
    --modes mst+checkpoint --cap 79 --offload checkpoints,optimizer --host-cap $2 --max-seq-limit 1048576 \
    --out /tmp/long/long-8b-$1 > /tmp/long/long-8b-$1.log 2>&1
  echo "$1 exit $?" >> /tmp/long/status
done
echo all-done >> /tmp/long/status
IN
setsid bash $long/run.sh "$PWD" > $long/nohup.log 2>&1 < /dev/null &
# wait here as long as the call allows, then hand back what there is
for i in $(seq 1 56); do sleep 10; grep -q all-done $long/status 2>/dev/null && break; done
free -g > $long/free.txt; nvidia-smi > $long/smi.txt 2>&1
cp -r $long "$out/" ; cd "$out" && tar -czf long.tgz long && rm -rf long; ls
