#!/usr/bin/env bash
# The CUDA backend on the GPU machine (an H200 with CUDA 13 and cuBLAS, but no Node): build the
# addon there and run the test/cuda*.test.ts files against the GPU, results under $OUT.
#
# 1. Here, in the repo root (needs npm install done, nvcc optional):
#      bash scripts/cuda-device.sh pack
#    runs ../shared/device/pack.sh (Node and its N-API headers into .device/), then fills
#    .device/cuda/ with node-addon-api and the test bundled by esbuild (the GPU machine has no
#    node_modules: "vitest" becomes scripts/cuda-vitest-shim.ts, effect and the rest are
#    inlined). The addon built here goes along too, as a fallback. .device/modules.tgz is left
#    alone: other work shares .device/.
# 2. On the GPU machine, with .device/node.gz .device/node-include.tgz .device/setup.sh
#    .device/gl .device/cuda:
#      bash scripts/cuda-device.sh             the tests (below)
#      bash scripts/cuda-device.sh bench ...   instead: bench/long-context.ts with PyTorch beside it,
#                                              its arguments passed on, results in $OUT
#      bash scripts/cuda-device.sh detach ...  the benchmark (ours only) left running detached, then
#      MINISEQ_SKIP_BUILD=1 bash scripts/cuda-device.sh collect SECONDS   in a later call: its results
#    builds the addon with nvcc there (native/build.mjs --direct, headers from $NODE_INCLUDE,
#    the fused-routine kernels included), runs the bundled test with MINISEQ_CUDA=1 (every
#    kernel, the graphs, every fused routine against the CPU reference, and the timings,
#    MINISEQ_CUDA_PERF=1), then the shared backend suite with CUDA among its backends
#    (test/conformance.test.ts, its chunked-vs-unchunked properties included), then the kernel cases and the fused "[small]" cases under
#    compute-sanitizer's memcheck, and the fused "[small]" cases under racecheck (shared-memory
#    hazards in the attention and softmax kernels). Logs go to $OUT. The whole run keeps within
#    $CUDA_DEVICE_BUDGET seconds (default 540, under a 600 s command limit); a
#    sanitizer step with too little time left is skipped, saying so.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = pack ]; then
  set -e
  bash ../shared/device/pack.sh
  mkdir -p .device/cuda
  tar -czf .device/cuda/node-addon-api.tgz node_modules/node-addon-api
  # The bundle takes everything the test/cuda*.test.ts files import, src/backends/cuda/fused.ts included;
  # the kernels themselves travel as sources (native/) and are built on the GPU machine.
  node --input-type=module -e '
    import { build } from "esbuild"
    const common = { bundle: true, platform: "node", format: "esm", target: "node20", logLevel: "warning", external: ["webgpu"],
      banner: { js: "import { createRequire as __cr } from \"node:module\"; const require = __cr(import.meta.url);" } }
    await build({ ...common, outfile: ".device/cuda/cuda.test.mjs", alias: { vitest: "./scripts/cuda-vitest-shim.ts" },
      stdin: { contents: ["cuda", "cuda-kernels", "cuda-graphs", "cuda-fused", "cuda-train", "cuda-timings"].map((f) => `import "./test/${f}.test.ts"`).join("; "), resolveDir: ".", loader: "ts" } })
    await build({ ...common, entryPoints: ["bench/long-context.ts"], outfile: ".device/cuda/long-context.mjs" })
    await build({ ...common, entryPoints: ["test/conformance.test.ts"], outfile: ".device/cuda/conformance.test.mjs", external: [],
      alias: { vitest: "./scripts/cuda-vitest-shim.ts", webgpu: "./scripts/webgpu-absent.ts" } })'
  if [ -f build/Release/miniseq_cuda.node ]; then cp build/Release/miniseq_cuda.node .device/cuda/; fi
  du -sh .device/node.gz .device/node-include.tgz .device/gl .device/cuda
  exit 0
fi

out="${OUT:-/tmp/cuda-device-out}"
mkdir -p "$out"
source .device/setup.sh >"$out/setup.log" 2>&1
tail -1 "$out/setup.log"
tar -xzf .device/cuda/node-addon-api.tgz
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >"$out/gpu.txt" 2>&1; cat "$out/gpu.txt"
# Where cuBLAS is: the addon looks in the usual places itself; point it at any other.
cublas=$(ldconfig -p | grep -o '/.*libcublas\.so\.13$' | head -1)
[ -n "$cublas" ] || cublas=$(ls /usr/local/cuda/lib64/libcublas.so.13 2>/dev/null)
[ -n "$cublas" ] || cublas=$(find /usr /opt -name libcublas.so.13 2>/dev/null | head -1)
echo "libcublas.so.13: ${cublas:-not found}" | tee -a "$out/gpu.txt"
[ -n "$cublas" ] && export MINISEQ_CUBLAS_DIR="$(dirname "$cublas")"

# Build here with this machine's nvcc; fall back to the addon built on the developer machine.
export PATH="$PATH:/usr/local/cuda/bin"
addon="$PWD/build/Release/miniseq_cuda.node"
if [ -n "${MINISEQ_SKIP_BUILD:-}" ] && [ -f "$addon" ]; then
  echo "reusing the addon built before (MINISEQ_SKIP_BUILD)"
elif ! node native/build.mjs --direct --strict 2>&1 | tee "$out/build.log"; then
  echo "device build failed; using the addon carried from the developer machine"
  addon="$PWD/.device/cuda/miniseq_cuda.node"
fi
cp build/miniseq_cuda.json build/miniseq_cuda-build.log "$out/" 2>/dev/null

export MINISEQ_CUDA=1 MINISEQ_CUDA_ADDON="$addon"

# detach: the same benchmark started in a process session of its own (setsid), for a step longer
# than one device call; it runs on while the machine stays warm, writing /tmp/miniseq-detached/.
# collect SECONDS (a later call, same machine): waits that long at most for it to end, then copies
# its log, results and a GPU memory trace (nvidia-smi every 10 s) to $OUT.
detached=/tmp/miniseq-detached
if [ "${1:-}" = detach ]; then
  shift
  mkdir -p "$detached"; rm -f "$detached"/*
  date -u +%FT%TZ >"$detached/started"
  setsid nohup bash -c "nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu,power.draw --format=csv -l 10 >$detached/gpu-trace.csv 2>&1 & trace=\$!
    NODE_OPTIONS=--max-old-space-size=16000 node .device/cuda/long-context.mjs --out $detached/long-context $* >$detached/bench.log 2>&1
    echo \$? >$detached/exit; date -u +%FT%TZ >>$detached/exit; kill \$trace" </dev/null >/dev/null 2>&1 &
  sleep 30; tail -5 "$detached/bench.log"
  exit 0
fi
if [ "${1:-}" = collect ]; then
  end=$((SECONDS + ${2:-540}))
  while [ ! -f "$detached/exit" ] && [ $SECONDS -lt $end ]; do sleep 5; done
  echo "started $(cat "$detached/started" 2>/dev/null); $([ -f "$detached/exit" ] && echo "ended (exit, time): $(tr '\n' ' ' <"$detached/exit")" || echo "still running")"
  cp "$detached"/bench.log "$detached"/long-context.json "$detached"/long-context.md "$detached"/gpu-trace.csv "$out/" 2>/dev/null
  tail -c 2000 "$detached/bench.log"
  exit 0
fi

# bench: the long-context benchmark against PyTorch (bench/long-context.ts), arguments passed on.
if [ "${1:-}" = bench ]; then
  shift
  python3 -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1 | tee -a "$out/gpu.txt"
  python3 -c "import transformers; print('transformers', transformers.__version__)" 2>&1 | tail -1 | tee -a "$out/gpu.txt"
  # (The GPU machine has no Nsight Systems: --profile mode:S times each kernel with CUDA events.)
  # PYTORCH= (empty) leaves the PyTorch baseline out (where it cannot fit, say).
  torch=${PYTORCH-python3}
  NODE_OPTIONS=--max-old-space-size=16000 node .device/cuda/long-context.mjs ${torch:+--pytorch "$torch"} --out "$out/long-context" "$@" 2>&1 | tee "$out/bench.log"
  exit "${PIPESTATUS[0]}"
fi
budget=${CUDA_DEVICE_BUDGET:-540}
# The timeout for a step that wants $1 seconds, less if the budget is short; 0: skip it.
allow() { local t=$1 left=$(( budget - SECONDS - 15 )); (( left < t )) && t=$left; (( t < 30 )) && t=0; echo "$t"; }

t=$(allow 240); [ "$t" = 0 ] && t=60
MINISEQ_CUDA_PERF=1 timeout "$t" node .device/cuda/cuda.test.mjs 2>&1 | tee "$out/test.log"
status=${PIPESTATUS[0]}
grep -E "^(FAIL|cuda timing)" "$out/test.log" >"$out/summary.txt"; tail -1 "$out/test.log" >>"$out/summary.txt"

# The shared backend suite (test/conformance.test.ts) with CUDA as one of its backends: every
# primitive and routine against the CPU in float64, kernels called directly, and chunked(M)
# against unchunked as fast-check properties. (WebGPU is absent from the bundle: skipped.)
t=$(allow 120)
if [ "$t" != 0 ]; then
  timeout "$t" node .device/cuda/conformance.test.mjs >"$out/conformance.log" 2>&1
  conformance=$?
  grep -E "^FAIL" "$out/conformance.log" >>"$out/summary.txt"
  echo "conformance exit $conformance: $(tail -1 "$out/conformance.log")" | tee -a "$out/summary.txt"
  [ "$conformance" = 0 ] || status=1
else
  echo "conformance: skipped, ${SECONDS}s of ${budget}s used" | tee -a "$out/summary.txt"
fi

# Under compute-sanitizer: memcheck (out-of-bounds and misaligned accesses) on the kernel cases
# (matmul's big CPU references left out to keep it short; the allocator case too, since its
# deliberate out-of-memory cudaMalloc counts as an error there) and on the small fused cases,
# then racecheck (shared-memory hazards) on the small fused cases.
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
sanitize() { # name, tool, filter, seconds
  local t; t=$(allow "$4")
  if [ ! -x "$sanitizer" ]; then echo "$1: no compute-sanitizer"; return; fi
  if [ "$t" = 0 ]; then echo "$1: skipped, ${SECONDS}s of ${budget}s used"; return; fi
  SHIM_FILTER="$3" timeout "$t" "$sanitizer" --tool "$2" --print-limit 20 node .device/cuda/cuda.test.mjs >"$out/$1.log" 2>&1
  echo "$1 exit $?: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|passed' "$out/$1.log" | tr '\n' ' ')" | tee -a "$out/summary.txt"
}
sanitize memcheck memcheck "cuda kernels > (write|fill|unary|binary|where|cast|strided|reduce|gather|a bad)" 90
sanitize memcheck-fused memcheck "cuda fused routines .*\\[small\\]" 120
sanitize racecheck-fused racecheck "cuda fused routines .*\\[small\\]" 150
echo "done in ${SECONDS}s"
exit "$status"
