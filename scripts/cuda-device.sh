#!/usr/bin/env bash
# The CUDA backend on the GPU machine (an H200 with CUDA 13 and cuBLAS, but no Node): build the
# addon there and run test/cuda.test.ts against the GPU, results under $OUT.
#
# 1. Here, in the repo root (needs npm install done, nvcc optional):
#      bash scripts/cuda-device.sh pack
#    runs ../shared/device/pack.sh (Node and its N-API headers into .device/), then fills
#    .device/cuda/ with node-addon-api and the test bundled by esbuild (the GPU machine has no
#    node_modules: "vitest" becomes scripts/cuda-vitest-shim.ts, effect and the rest are
#    inlined). The addon built here goes along too, as a fallback. .device/modules.tgz is left
#    alone: other work shares .device/.
# 2. With the device tool, carrying .device/node.gz .device/node-include.tgz .device/setup.sh
#    .device/gl .device/cuda:
#      bash scripts/cuda-device.sh
#    builds the addon with nvcc there (native/build.mjs --direct, headers from $NODE_INCLUDE),
#    runs the bundled test with MINISEQ_CUDA=1 (and the timings, MINISEQ_CUDA_PERF=1), then the
#    kernel cases again under compute-sanitizer's memcheck. Logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = pack ]; then
  set -e
  bash ../shared/device/pack.sh
  mkdir -p .device/cuda
  tar -czf .device/cuda/node-addon-api.tgz node_modules/node-addon-api
  node --input-type=module -e '
    import { build } from "esbuild"
    await build({
      entryPoints: ["test/cuda.test.ts"], outfile: ".device/cuda/cuda.test.mjs", bundle: true, platform: "node",
      format: "esm", target: "node20", alias: { vitest: "./scripts/cuda-vitest-shim.ts" }, logLevel: "warning",
      banner: { js: "import { createRequire as __cr } from \"node:module\"; const require = __cr(import.meta.url);" },
    })'
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
if ! node native/build.mjs --direct --strict 2>&1 | tee "$out/build.log"; then
  echo "device build failed; using the addon carried from the developer machine"
  addon="$PWD/.device/cuda/miniseq_cuda.node"
fi
cp build/miniseq_cuda.json build/miniseq_cuda-build.log "$out/" 2>/dev/null

export MINISEQ_CUDA=1 MINISEQ_CUDA_ADDON="$addon"
MINISEQ_CUDA_PERF=1 timeout 180 node .device/cuda/cuda.test.mjs 2>&1 | tee "$out/test.log"
status=${PIPESTATUS[0]}

# The kernel cases once more under memcheck (out-of-bounds and misaligned accesses); matmul's
# big CPU references are left out to keep it short.
if command -v compute-sanitizer >/dev/null || [ -x /usr/local/cuda/bin/compute-sanitizer ]; then
  SHIM_FILTER="cuda kernels > (write|fill|unary|binary|where|cast|strided|reduce|gather|a bad|counts)" timeout 90 compute-sanitizer --tool memcheck --print-limit 20 node .device/cuda/cuda.test.mjs >"$out/memcheck.log" 2>&1
  echo "memcheck exit $?: $(grep -E 'ERROR SUMMARY|passed' "$out/memcheck.log" | tr '\n' ' ')"
fi
exit "$status"
