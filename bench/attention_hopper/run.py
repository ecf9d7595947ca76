#!/usr/bin/env python3
"""miniseq's attention kernels through ctypes (libminiseq_attn.so, build.sh) on PyTorch tensors.

  python3 bench/attention_hopper/run.py correct [--lib PATH] [--out FILE]
  python3 bench/attention_hopper/run.py time    [--lib PATH] [--out FILE] [--seqs 4096,8192,32768] [--dims 64,128]

correct: causal GQA attention against a float64 reference on fresh random inputs (S from 1 to a few
thousand, ragged tiles, GQA ratios 1, 4, 8, D 64 and 128); outputs poisoned with NaN first, so an
unwritten element fails (NaN never passes); relative error ||out - ref|| / ||ref|| of o, max
|lse - ref|; the mma.sync kernel beside it; determinism (two runs, same bits).
time: B = 1, H = 32, Hkv = 8 (expanded for PyTorch, not timed), causal, bf16; CUDA events, median
of many runs after warm-up; ours vs SDPA with the cuDNN backend and with the flash backend.
FLOPs: forward 4·B·H·S²·D / 2, backward 2.5× that.
"""
import argparse, ctypes, json, math, os, statistics, sys, time
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
NO_WGMMA_BWD = False
# forward variants (attention_hopper.cu's bits: 2 unpipelined, 4 v1's grid order, 8 ping-pong); 100: what attentionForward dispatches to
IMPLS = {"mma": 0, "wgmma": 1, "wgmma_nopipe": 2, "wgmma_v1order": 5, "wgmma_pingpong": 9, "dispatch": 100}
# backward variants (bits: 2 the dK/dV kernel without the overlap, 4 v1's grid order, 8 the fused one-pass
# kernel with atomic dQ, 16 with 8: its other dQ split (by columns at D = 64, by keys at 128), 32 with 8: dQ by a
# bulk reduce-add per tile, 64 with 8: P while dP runs at D = 64 (ignored at 128), 128 with 8: dS stored
# transposed and read K-major (no transposed A read); 256 without 4: the dK/dV kernel's grid in pairs of kv heads; 7 is
# v1 exactly); dispatch: what attentionBackward runs by default
BWD_IMPLS = {"mma": 0, "wgmma": 1, "wgmma_serial": 3, "wgmma_v1": 7, "wgmma_fused": 9, "wgmma_fused_v1order": 13,
             "wgmma_fused_othersplit": 25, "wgmma_fused_bulk": 41, "wgmma_fused_overlap": 73, "wgmma_fused_bulk_overlap": 105,
             "wgmma_fused_kmajor": 137, "wgmma_pairs": 259, "dispatch": 100}
# fp32 atomic adds in any order: same bits twice is reported, not required
NONDETERMINISTIC = {"wgmma_fused", "wgmma_fused_v1order", "wgmma_fused_othersplit", "wgmma_fused_bulk", "wgmma_fused_overlap",
                    "wgmma_fused_bulk_overlap", "wgmma_fused_kmajor"}
SKIP_BWD = set()


def load(path):
    lib = ctypes.CDLL(path)
    P, L = ctypes.c_void_p, ctypes.c_longlong
    lib.ms_attn_forward.argtypes = [ctypes.c_int, P, P, P, P, P, L, L, L, L, L, P]
    lib.ms_attn_backward.argtypes = [ctypes.c_int, P, P, P, P, P, P, P, P, P, L, L, L, L, L, P, P]
    lib.ms_attn_scratch.argtypes = [L, L, L, L]
    lib.ms_attn_scratch.restype = L
    lib.ms_error_string.restype = ctypes.c_char_p
    return lib


class Ours:
    def __init__(self, lib):
        self.lib = lib

    def check(self, rc, what):
        if rc != 0:
            msg = self.lib.ms_error_string(rc).decode() if rc > 0 else "not available"
            raise RuntimeError(f"{what}: {rc} {msg}")

    def forward(self, impl, q, k, v, o, lse):
        B, H, S, D = q.shape
        Hkv = k.shape[1]
        rc = self.lib.ms_attn_forward(IMPLS[impl], q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), lse.data_ptr(), B, H, Hkv, S, D,
                                      torch.cuda.current_stream().cuda_stream)
        self.check(rc, f"forward {impl}")

    def backward(self, impl, q, k, v, o, lse, dO, dq, dk, dv, scratch):
        B, H, S, D = q.shape
        Hkv = k.shape[1]
        rc = self.lib.ms_attn_backward(impl, q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), lse.data_ptr(), dO.data_ptr(), dq.data_ptr(),
                                       dk.data_ptr(), dv.data_ptr(), B, H, Hkv, S, D, scratch.data_ptr(), torch.cuda.current_stream().cuda_stream)
        self.check(rc, f"backward {impl}")

    def sync(self):
        torch.cuda.synchronize()
        self.check(self.lib.ms_sync(), "sync")


def reference(q, k, v):
    """float64 causal GQA attention: o [B,H,S,D], lse [B,H,S] (natural log of the scaled scores)."""
    B, H, S, D = q.shape
    g = H // k.shape[1]
    qd, kd, vd = q.double(), k.double().repeat_interleave(g, 1), v.double().repeat_interleave(g, 1)
    s = (qd @ kd.transpose(-1, -2)) / math.sqrt(D)
    mask = torch.ones(S, S, dtype=torch.bool, device=q.device).triu(1)
    s.masked_fill_(mask, -math.inf)
    lse = torch.logsumexp(s, -1)
    o = torch.exp(s - lse[..., None]) @ vd
    return o, lse


def check_backward(ours, q, k, v):
    """dq, dk, dv of ours (mma.sync and Hopper backward, fed the mma.sync forward's o and lse) against float64 autograd."""
    B, H, S, D = q.shape
    Hkv = k.shape[1]
    dO = torch.randn_like(q)
    qd, kd, vd = [t.double().requires_grad_(True) for t in (q, k, v)]
    ro, _ = reference(qd, kd, vd)
    rq, rk, rv = torch.autograd.grad(ro, (qd, kd, vd), dO.double())
    o = torch.empty_like(q)
    lse = torch.empty(B, H, S, device="cuda", dtype=torch.float32)
    ours.forward("mma", q, k, v, o, lse)
    scratch = torch.empty(max(16, ours.lib.ms_attn_scratch(B, H, S, D)), dtype=torch.uint8, device="cuda")
    out = {}
    for name, impl in BWD_IMPLS.items():
        if (NO_WGMMA_BWD and name != "mma") or name in SKIP_BWD:
            continue
        runs = []
        print(f"  start bwd {name}", flush=True)  # the last one started names a hang (device.sh)
        try:
            for _ in range(2):
                g = [torch.full_like(t, float("nan")) for t in (q, k, v)]
                ours.backward(impl, q, k, v, o, lse, dO, g[0], g[1], g[2], scratch)
                ours.sync()
                runs.append(g)
        except RuntimeError as e:
            out[name] = dict(error=str(e), ok=False)
            continue
        g = runs[0]
        errs = dict(dq=rel(g[0], rq), dk=rel(g[1], rk), dv=rel(g[2], rv))
        unwritten = sum(int((~torch.isfinite(t)).sum().item()) for t in g)
        same = all(torch.equal(a.view(torch.int16), b.view(torch.int16)) for a, b in zip(runs[0], runs[1]))
        worst = max(errs.values())
        out[name] = dict(**errs, worst=worst, unwritten=unwritten, same_bits=same,
                         ok=unwritten == 0 and (same or name in NONDETERMINISTIC) and math.isfinite(worst) and worst < 1.5e-2)
    return out


def all_ok(row):
    fwd = all(row[i].get("ok") for i in IMPLS if i != "mma" and i in row)
    bwd = all(v.get("ok") for k, v in row.get("bwd", {}).items() if k != "mma")
    return fwd and bwd


def bwd_summary(b):
    if not b:
        return "-"
    m = b.get("mma", {})
    parts = []
    for name in ("wgmma", "wgmma_fused", "wgmma_fused_bulk", "wgmma_fused_kmajor"):
        w = b.get(name)
        if w is None:
            continue
        if "worst" not in w:
            parts.append(f"{name} " + str(w.get("error", "?")))
            continue
        parts.append(f"{name} dq {w['dq']:.1e} dk {w['dk']:.1e} dv {w['dv']:.1e} unw {w['unwritten']} bits {w['same_bits']}")
    return " ".join(parts) + f" (mma worst {m.get('worst', float('nan')):.1e})"


def rel(a, b):
    """||a - b|| / ||b||; where b is exactly zero (dq and dk at S = 1), the RMS of a instead."""
    a, b = a.double(), b.double()
    if b.norm().item() == 0:
        return (a.norm() / math.sqrt(a.numel())).item()
    return ((a - b).norm() / b.norm()).item()


def correct(ours, args):
    cases = []
    for D in (64, 128):
        for S in (1, 17, 64, 127, 128, 129, 200, 257, 383, 1000, 2048, 3001):
            for g in (1, 4, 8):
                Hkv = 2 if S > 1500 else 1 + (S % 2)
                cases.append((1 + (S < 300), Hkv * g, Hkv, S, D))
    cases += [(1, 32, 8, 4096, 64), (1, 32, 8, 4096, 128)]
    results, fails, shown = [], 0, False
    fails_bwd = [0]
    torch.manual_seed(1)
    for (B, H, Hkv, S, D) in cases:
        q = torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.bfloat16)
        ro, rl = reference(q, k, v)
        row = dict(B=B, H=H, Hkv=Hkv, S=S, D=D)
        for impl in ("mma", "wgmma", "wgmma_nopipe", "wgmma_v1order", "wgmma_pingpong", "dispatch"):
            o = torch.full_like(q, float("nan"))
            lse = torch.full((B, H, S), float("nan"), device="cuda", dtype=torch.float32)
            try:
                ours.forward(impl, q, k, v, o, lse)
                ours.sync()
            except RuntimeError as e:
                row[impl] = dict(error=str(e))
                fails += impl.startswith("wgmma")
                continue
            unwritten = int((~torch.isfinite(o)).sum().item() + (~torch.isfinite(lse)).sum().item())
            eo = rel(o, ro)
            el = (lse.double() - rl).abs().max().item()
            ok = unwritten == 0 and eo < 8e-3 and el < 1e-3 and math.isfinite(eo) and math.isfinite(el)
            r = dict(rel_o=eo, max_lse=el, unwritten=unwritten, ok=ok)
            if impl == "wgmma":
                o2 = torch.full_like(q, float("nan"))
                lse2 = torch.full_like(lse, float("nan"))
                ours.forward(impl, q, k, v, o2, lse2)
                ours.sync()
                r["same_bits"] = bool(torch.equal(o.view(torch.int16), o2.view(torch.int16)) and torch.equal(lse.view(torch.int32), lse2.view(torch.int32)))
                r["ok"] = ok and r["same_bits"]
            row[impl] = r
            if (impl.startswith("wgmma") or impl == "dispatch") and not r["ok"]:
                fails += 1
                if not shown and S >= 128:
                    shown = True
                    # Where the error sits: by row block of 8 and by column block of 8, head 0.
                    e = (o[0, 0].double() - ro[0, 0]).abs()
                    print(f"  first failing case ({impl}): error by 8-row block (first 32):",
                          [f"{x:.2f}" for x in e[:256].reshape(-1, 8, D).mean((1, 2)).tolist()[:32]])
                    print("  by 8-column block:", [f"{x:.2f}" for x in e.reshape(-1, D // 8, 8).mean((0, 2)).tolist()])
                    print("  o[0,0,0,:8]", o[0, 0, 0, :8].tolist(), "ref", ro[0, 0, 0, :8].tolist())
                    print("  o[0,0,100,:8]", o[0, 0, 100, :8].tolist(), "ref", ro[0, 0, 100, :8].tolist())
                    print("  lse[0,0,:4]", lse[0, 0, :4].tolist(), "ref", rl[0, 0, :4].tolist())
        if S <= 2048:
            row["bwd"] = check_backward(ours, q, k, v)
            for impl in BWD_IMPLS:
                r = row["bwd"].get(impl, {})
                if impl != "mma" and impl in row["bwd"] and not r.get("ok"):
                    fails_bwd[0] += 1
        results.append(row)
        w = row.get("wgmma", {})
        m = row.get("mma", {})
        print(f"B={B} H={H:>2} Hkv={Hkv} S={S:>5} D={D:>3}  wgmma rel {w.get('rel_o', float('nan')):.2e} lse {w.get('max_lse', float('nan')):.1e}"
              f" unwritten {w.get('unwritten', '-')} bits {w.get('same_bits', '-')}  nopipe {row.get('wgmma_nopipe', {}).get('rel_o', float('nan')):.2e}"
              f"  dispatch {row.get('dispatch', {}).get('rel_o', float('nan')):.2e}"
              f"  bwd {bwd_summary(row.get('bwd'))}  mma {m.get('rel_o', float('nan')):.2e}  {'ok' if all_ok(row) else 'FAIL ' + str(w.get('error', ''))}",
              flush=True)
        del q, k, v, ro, rl
    torch.cuda.empty_cache()
    summary = dict(cases=len(cases), failures=fails, backward_failures=fails_bwd[0],
                   worst_bwd={i: max((r["bwd"][i].get("worst", math.inf) for r in results if "bwd" in r and i in r["bwd"]), default=None) for i in BWD_IMPLS},
                   worst_rel_o={i: max((r[i].get("rel_o", math.inf) if "rel_o" in r.get(i, {}) else math.inf) for r in results) for i in IMPLS},
                   worst_lse={i: max((r[i].get("max_lse", math.inf) if "max_lse" in r.get(i, {}) else math.inf) for r in results) for i in IMPLS},
                   bwd_same_bits=all(r["bwd"][i].get("same_bits", False) for r in results if "bwd" in r for i in r["bwd"] if i not in NONDETERMINISTIC),
                   fused_same_bits=all(r["bwd"][i].get("same_bits", False) for r in results if "bwd" in r for i in r["bwd"] if i in NONDETERMINISTIC),
                   fwd_same_bits=all(r["wgmma"].get("same_bits", False) for r in results if "wgmma" in r))
    print("correctness:", json.dumps(summary))
    with open(args.out, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), summary=summary, rows=results), f, indent=1)
    return fails + fails_bwd[0]


def median_ms(fn, reps, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def timing(ours, args):
    from torch.nn.attention import sdpa_kernel, SDPBackend
    B, H, Hkv = 1, 32, 8
    rows = []
    impls = args.impls.split(",")
    bwd_names = args.bwd_impls.split(",") if args.bwd_impls else list(BWD_IMPLS)
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}; causal, B=1, H=32, Hkv=8, bf16; TFLOP/s (median ms)", flush=True)
    for D in [int(x) for x in args.dims.split(",")]:
        for S in [int(x) for x in args.seqs.split(",")]:
            torch.manual_seed(S + D)
            q = torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.bfloat16)
            dO = torch.randn_like(q)
            flops = 4 * B * H * S * S * D / 2
            reps = max(10, min(args.reps, int(3e16 / flops)))
            row = dict(S=S, D=D, reps=reps)
            o = torch.empty_like(q)
            lse = torch.empty(B, H, S, device="cuda", dtype=torch.float32)
            for impl in impls:
                try:
                    ms = median_ms(lambda: ours.forward(impl, q, k, v, o, lse), reps)
                    ours.sync()
                    row[f"{impl}_fwd_ms"] = ms
                    row[f"{impl}_fwd"] = flops / ms / 1e9
                except RuntimeError as e:
                    row[f"{impl}_fwd_error"] = str(e)
            # ours backward: the mma.sync kernels and the Hopper ones, on the forward's o and lse
            ours.forward("mma", q, k, v, o, lse)
            dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
            scratch = torch.empty(max(16, ours.lib.ms_attn_scratch(B, H, S, D)), dtype=torch.uint8, device="cuda")
            for name, impl in BWD_IMPLS.items():
                if name not in bwd_names or (name != "mma" and args.no_wgmma_bwd) or name in SKIP_BWD:
                    continue
                try:
                    ms = median_ms(lambda: ours.backward(impl, q, k, v, o, lse, dO, dq, dk, dv, scratch), max(5, reps // 2))
                    ours.sync()
                    row[f"{name}_bwd_ms"] = ms
                    row[f"{name}_bwd"] = 2.5 * flops / ms / 1e9
                except RuntimeError as e:
                    row[f"{name}_bwd_error"] = str(e)
            row["ours_bwd"] = row.get(f"{args.bwd}_bwd")
            row["ours_fwd"] = row.get("wgmma_fwd")  # the variant attentionForward dispatches to by default
            ke, ve = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
            for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
                try:
                    qq, kk, vv = [t.detach().clone().requires_grad_(True) for t in (q, ke, ve)]
                    with sdpa_kernel(backend):
                        fwd = lambda: F.scaled_dot_product_attention(qq, kk, vv, is_causal=True)
                        ms = median_ms(fwd, reps)
                        row[f"{name}_fwd_ms"] = ms
                        row[f"{name}_fwd"] = flops / ms / 1e9
                        out = fwd()
                        bwd = lambda: torch.autograd.grad(out, (qq, kk, vv), dO, retain_graph=True)
                        ms = median_ms(bwd, max(5, reps // 2))
                        row[f"{name}_bwd_ms"] = ms
                        row[f"{name}_bwd"] = 2.5 * flops / ms / 1e9
                    del qq, kk, vv, out
                except Exception as e:  # a backend that is not available for this shape
                    row[f"{name}_error"] = str(e)[:200]
            rows.append(row)
            f = lambda key: f"{row[key]:7.1f}" if key in row and row[key] else "      -"
            print(f"S={S:>6} D={D:>3} | " + " ".join(f"{i} {f(i + '_fwd')}" for i in impls) +
                  f" | cudnn {f('cudnn_fwd')} flash {f('flash_fwd')} || bwd " + " ".join(f"{i} {f(i + '_bwd')}" for i in bwd_names) + f" cudnn {f('cudnn_bwd')} flash {f('flash_bwd')}", flush=True)
            del q, k, v, dO, o, lse, ke, ve
            torch.cuda.empty_cache()
            with open(args.out, "w") as fh:
                json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows), fh, indent=1)
    print("\nS      D   | ours fwd  cudnn fwd  flash fwd | ours bwd  cudnn bwd  flash bwd   (TFLOP/s, " + torch.cuda.get_device_name() + ")")
    for r in rows:
        g = lambda key: f"{r[key]:9.1f}" if r.get(key) else "        -"
        print(f"{r['S']:<6} {r['D']:<3} |{g('ours_fwd')} {g('cudnn_fwd')} {g('flash_fwd')}  |{g('ours_bwd')} {g('cudnn_bwd')} {g('flash_bwd')}")
    print("\nbackward: the fused one-pass kernel (atomic dQ) beside today's default and cuDNN (TFLOP/s; x cuDNN)")
    heads = ("9 fused", "13 v1o", "25 othr", "41 bulk", "73 ovlp", "105 b+o", "137 kmaj", "default", "cudnn")
    print("S      D   |" + "".join(f"{h:>8}" for h in heads[:7]) + "".join(f" {h:>8}" for h in heads[7:]) +
          " | best fused/cudnn  default/cudnn  best fused/default")
    fused = ("wgmma_fused_bwd", "wgmma_fused_v1order_bwd", "wgmma_fused_othersplit_bwd", "wgmma_fused_bulk_bwd", "wgmma_fused_overlap_bwd",
             "wgmma_fused_bulk_overlap_bwd", "wgmma_fused_kmajor_bwd")
    for r in rows:
        g = lambda key: f"{r[key]:8.1f}" if r.get(key) else "       -"
        best = max((r[k] for k in fused if r.get(k)), default=None)
        ratio = lambda a, b: f"{a / b:16.2f}" if a and b else "               -"
        print(f"{r['S']:<6} {r['D']:<3} |" + "".join(g(k) for k in fused) + f" {g('dispatch_bwd')} {g('cudnn_bwd')} |"
              f"{ratio(best, r.get('cudnn_bwd'))} {ratio(r.get('dispatch_bwd'), r.get('cudnn_bwd'))[2:]} {ratio(best, r.get('dispatch_bwd'))}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["correct", "time"])
    p.add_argument("--lib", default=os.path.join(HERE, "..", "..", "build", "attention_hopper", "libminiseq_attn.so"))
    p.add_argument("--out", default="attention.json")
    p.add_argument("--seqs", default="4096,8192,32768")
    p.add_argument("--dims", default="64,128")
    p.add_argument("--impls", default="mma,wgmma,wgmma_nopipe,wgmma_v1order,wgmma_pingpong")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--bwd", default="dispatch", help="which backward (a BWD_IMPLS name) is reported as ours_bwd")
    p.add_argument("--bwd-impls", default="", help="backward variants (BWD_IMPLS names) to time; default all")
    p.add_argument("--skip-bwd", default="", help="backward variants (BWD_IMPLS names, comma-separated) not to run")
    p.add_argument("--no-wgmma-bwd", action="store_true", help="skip the Hopper backward (it hung in the sanity run)")
    a = p.parse_args()
    global NO_WGMMA_BWD
    NO_WGMMA_BWD = a.no_wgmma_bwd
    SKIP_BWD.update(x for x in a.skip_bwd.split(",") if x)
    ours = Ours(load(a.lib))
    if a.mode == "correct":
        sys.exit(1 if correct(ours, a) else 0)
    timing(ours, a)


if __name__ == "__main__":
    main()
