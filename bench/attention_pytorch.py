#!/usr/bin/env python3
"""PyTorch's causal SDPA, timed the way test/cuda.test.ts times miniseq's attention kernels, so the
two can be put side by side (docs/cuda.md).

  python3 bench/attention_pytorch.py [--seqs 4096,8192,16384] [--dims 64,128] [--out attention.json]

Shapes: B = 1, H = 32 query heads, Hkv = 8, bf16, causal. K and V are expanded to 32 heads first,
as Hugging Face's Llama does before calling SDPA (repeat_kv); the expansion is not timed. The
forward and the backward (dq, dk, dv from dO) are timed separately with CUDA events, median of 20
runs after 5 warm-ups. FLOPs are counted as the test counts them: forward 4·B·H·S²·D / 2 (causal),
backward 2.5 times that. The kernel's name comes from the profiler, so the table says which of
PyTorch's SDPA backends (flash, cuDNN, memory-efficient) ran.
"""
import argparse, json, statistics
import torch
import torch.nn.functional as F


def timed(fn, runs=20, warmup=5):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(); fn(); end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def kernel_names(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn(); torch.cuda.synchronize()
    names = sorted({e.key for e in prof.key_averages() if "attention" in e.key.lower() or "fmha" in e.key.lower() or "flash" in e.key.lower()})
    return [n[:80] for n in names]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seqs", default="4096,8192,16384,32768")
    p.add_argument("--dims", default="64,128")
    p.add_argument("--out", default="attention-pytorch.json")
    a = p.parse_args()
    torch.manual_seed(0)
    rows = []
    print(f"PyTorch {torch.__version__} on {torch.cuda.get_device_name()}: causal SDPA, B = 1, H = 32, Hkv = 8 (expanded), bf16")
    print(f"{'S':>6} {'D':>4} {'fwd ms':>8} {'TFLOP/s':>8} {'bwd ms':>8} {'TFLOP/s':>8}  kernels")
    for D in [int(x) for x in a.dims.split(",")]:
        for S in [int(x) for x in a.seqs.split(",")]:
            q = torch.randn(1, 32, S, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            kv = [torch.randn(1, 8, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
            k, v = [t.repeat_interleave(4, dim=1).requires_grad_(True) for t in kv]
            dO = torch.randn_like(q)
            fwd = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
            out = fwd()
            bwd = lambda: torch.autograd.grad(out, (q, k, v), dO, retain_graph=True)
            tf, tb = timed(fwd), timed(bwd)
            flops = 4 * 32 * S * S * D / 2
            row = dict(S=S, D=D, forward_ms=tf, forward_tflops=flops / tf / 1e9, backward_ms=tb, backward_tflops=2.5 * flops / tb / 1e9,
                       kernels=kernel_names(lambda: torch.autograd.grad(fwd(), (q, k, v), dO)))
            rows.append(row)
            print(f"{S:>6} {D:>4} {tf:8.3f} {row['forward_tflops']:8.1f} {tb:8.3f} {row['backward_tflops']:8.1f}  {', '.join(row['kernels'])}")
            del q, k, v, kv, dO, out
            torch.cuda.empty_cache()
    with open(a.out, "w") as f:
        json.dump(dict(torch=torch.__version__, device=torch.cuda.get_device_name(), rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
