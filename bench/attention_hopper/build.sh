#!/bin/bash
# Builds libminiseq_attn.so (the attention kernels + capi.cu) and sanity (a small standalone
# check for compute-sanitizer). Run from the repository root: bash bench/attention_hopper/build.sh [outdir]
set -e
out=${1:-build/attention_hopper}
mkdir -p "$out"
K=native/kernels
NV="nvcc -O3 -std=c++17 -Xcompiler -fPIC"
G90="-gencode=arch=compute_90,code=[sm_90,compute_90]"
G90A="-gencode=arch=compute_90a,code=sm_90a"
pids=()
for f in attention attention_backward attention_mma attention_mma_backward; do
  $NV -c $G90 $K/$f.cu -o "$out/$f.o" & pids+=($!)
done
$NV -c $G90A -Xptxas -v $K/attention_hopper.cu -o "$out/attention_hopper.o" 2> "$out/ptxas.txt" & pids+=($!)
$NV -c $G90A -Xptxas -v $K/attention_hopper_backward.cu -o "$out/attention_hopper_backward.o" 2> "$out/ptxas_bwd.txt" & pids+=($!)
$NV -c $G90A -Xptxas -v $K/attention_hopper_backward_fused.cu -o "$out/attention_hopper_backward_fused.o" 2> "$out/ptxas_bwd_fused.txt" & pids+=($!)
$NV -c $G90 bench/attention_hopper/capi.cu -o "$out/capi.o" & pids+=($!)
$NV -c $G90 bench/attention_hopper/sanity.cu -o "$out/sanity.o" & pids+=($!)
failed=0
for p in "${pids[@]}"; do wait $p || failed=1; done
# nvcc's messages for the sm_90a files are in the ptxas*.txt files (with -Xptxas -v)
if [ $failed = 1 ]; then grep -h -i -B2 -A2 "error" "$out"/ptxas*.txt; echo "build failed"; exit 1; fi
objs="$out/attention.o $out/attention_backward.o $out/attention_mma.o $out/attention_mma_backward.o $out/attention_hopper.o $out/attention_hopper_backward.o $out/attention_hopper_backward_fused.o"
nvcc -shared -o "$out/libminiseq_attn.so" $objs "$out/capi.o"
nvcc -o "$out/sanity" $objs "$out/sanity.o"
echo "built $out"
