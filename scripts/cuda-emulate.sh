#!/usr/bin/env bash
# The fused-routine kernels (native/kernels/{softmax,activation,norm,rope,attention*}.cu), the
# index kernels (index.cu) and the reductions (reduce.cu, the gradient norm's sum of squares) on the CPU,
# for a machine without a GPU. Each kernel file is rewritten a little (a launch
# `k<<<grid, block, smem, stream>>>(args)` becomes `emu::launch(k, emu::Cfg(grid, block, smem,
# stream), args)`, the `extern __shared__` array the block's buffer), compiled as C++ with
# native/emulate/host.h (a CUDA thread per std::thread, barriers for __syncthreads and shuffles)
# and checked by native/emulate/check.cc against float64 references.
#
#   bash scripts/cuda-emulate.sh          every case under AddressSanitizer + UBSan (~2-4 min)
#   bash scripts/cuda-emulate.sh race     small cases under ThreadSanitizer: shared-memory races
#
# It checks the kernels' indexing, tiling, masking, reductions and barriers, not their speed or
# the GPU's float rounding (host libm; blocks run one after another). Needs g++ and the CUDA
# headers ($CUDA_HOME, default /usr/local/cuda), not nvcc or a driver.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
cuda=${CUDA_HOME:-/usr/local/cuda}
[ -f "$cuda/include/cuda_runtime.h" ] || { echo "no CUDA headers under $cuda (set CUDA_HOME)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp native/kernels/*.cuh native/kernels/kernels.h "$work/"
# The tensor-core kernels' PTX (ldmatrix, mma.sync, cp.async) becomes warp-level host code.
cp native/emulate/attention_ptx.h "$work/attention_ptx.cuh"
sources=()
for f in softmax activation norm rope index reduce attention attention_backward attention_mma attention_mma_backward; do
  sources+=("$work/$f.cc")
  node -e '
    const fs = require("fs")
    let s = fs.readFileSync(process.argv[1], "utf8")
    const shared = "extern __shared__ __align__(16) unsigned char smem[];"
    s = s.split(shared).join("unsigned char* smem = ::emu::dynamicSmem();")
    s = s.replace(/([A-Za-z_]\w*(?:<[^<>;()]*>)?)<<<(.+?)>>>\(/g, (_, k, cfg) => `::emu::launch(${k}, ::emu::Cfg(${cfg}), `)
    if (/<<<|extern __shared__/.test(s)) { console.error(`${process.argv[1]}: a launch or shared array the rewrite does not know`); process.exit(1) }
    fs.writeFileSync(process.argv[2], s)' "native/kernels/$f.cu" "$work/$f.cc"
done
if [ "$mode" = race ]; then san=(-fsanitize=thread); else san=(-fsanitize=address,undefined -fno-sanitize-recover=undefined); fi
echo "compiling the kernels for the host (${san[*]})"
g++ -std=c++17 -O1 -g "${san[@]}" -w -include native/emulate/host.h -I"$cuda/include" -I"$work" \
  -DcudaGetLastError=emu_cudaGetLastError -DcudaFuncSetAttribute=emu_cudaFuncSetAttribute \
  "${sources[@]}" native/emulate/check.cc -o "$work/check" -lpthread
# TSan reports go to stderr and make the exit code non-zero.
TSAN_OPTIONS="halt_on_error=0 exitcode=66" "$work/check" "$mode"
