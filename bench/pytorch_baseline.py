#!/usr/bin/env python3
"""PyTorch / Hugging Face baseline for miniseq's training benchmark (run side by side with
bench/train-throughput.ts --backend cuda).

  python3 bench/pytorch_baseline.py --model llama-3.2-1b --seqs 4096,8192,16384,32768,65536 \
      --modes vanilla,checkpoint --steps 3 --out results.json [--device cuda|cpu] [--dtype bf16|fp32] \
      [--master-fp32] [--max-seq] [--memory-gb 80] [--config config.json]

What one (mode, S) row measures: a freshly built, seeded, randomly initialised Llama at batch 1 and
sequence length S, trained for --steps full steps (forward + loss + backward + AdamW step +
zero_grad(set_to_none=True)). tokens/s is S / step time, median over the steps after the first (the
first pays for cuBLAS/SDPA heuristics and allocating AdamW's moments). Peak memory is
max_memory_allocated / max_memory_reserved over all steps, counted from just after the model was
built, so it includes weights, gradients, AdamW moments, activations and the logits/loss.

Precision: by default "pure bf16" (weights, grads and AdamW moments in bf16, like miniseq's
`--precision bf16`). --master-fp32 keeps weights, grads and moments in fp32 and runs the forward
under torch.autocast(bf16): that is PyTorch's stock mixed precision, not a bf16-weights + fp32-copy
scheme, so its memory is 4+4+8 bytes/param of state plus autocast's bf16 weight casts.

--max-seq bisects the largest S whose --max-seq-steps (default 2) steps train without running out
of memory. Two, because AdamW makes its moments inside the first step's opt.step(): the first
forward and backward run without them, so one step alone fits a longer S than training can keep.

Uses transformers.LlamaForCausalLM (attn_implementation="sdpa") when transformers imports, otherwise
a small self-contained Llama of the same architecture (reported as "implementation": "fallback").
"""
import argparse, contextlib, gc, inspect, json, math, os, platform, statistics, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint  # a submodule: not loaded by "import torch" on older versions

# Same numbers as src/models/config.ts (head_dim absent = hidden_size / num_attention_heads).
PRESETS = {
    "tiny": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 vocab_size=256, rope_theta=10000, rms_norm_eps=1e-5, max_position_embeddings=1024, tie_word_embeddings=False),
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                         head_dim=64, vocab_size=128256, rope_theta=500000, rms_norm_eps=1e-5, max_position_embeddings=131072, tie_word_embeddings=True),
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                      vocab_size=128256, rope_theta=500000, rms_norm_eps=1e-5, max_position_embeddings=8192, tie_word_embeddings=False),
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                      vocab_size=32000, rope_theta=10000, rms_norm_eps=1e-5, max_position_embeddings=4096, tie_word_embeddings=False),
}
PRESETS["tiny-bpe"] = dict(PRESETS["tiny"], vocab_size=100277, max_position_embeddings=4096)
KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size",
        "head_dim", "rope_theta", "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings")
DEFAULTS = dict(rope_theta=10000, rms_norm_eps=1e-5, tie_word_embeddings=False)  # config.ts decoding defaults

try:
    import transformers
except Exception:  # ImportError, or a transformers too new for this torch
    transformers = None

# ---------------------------------------------------------------- fallback Llama (no transformers)
class RMSNorm(nn.Module):
    def __init__(s, d, eps):
        super().__init__(); s.eps = eps; s.weight = nn.Parameter(torch.ones(d))
    def forward(s, x):  # normalise in fp32 and cast back, as HF's LlamaRMSNorm does
        h = x.float()
        return s.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + s.eps)).to(x.dtype)

def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)

class Layer(nn.Module):
    def __init__(s, c):
        super().__init__()
        d, s.h, s.kv, s.hd = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        s.q, s.k = nn.Linear(d, s.h * s.hd, bias=False), nn.Linear(d, s.kv * s.hd, bias=False)
        s.v, s.o = nn.Linear(d, s.kv * s.hd, bias=False), nn.Linear(s.h * s.hd, d, bias=False)
        i = c["intermediate_size"]
        s.gate, s.up, s.down = nn.Linear(d, i, bias=False), nn.Linear(d, i, bias=False), nn.Linear(i, d, bias=False)
        s.n1, s.n2 = RMSNorm(d, c["rms_norm_eps"]), RMSNorm(d, c["rms_norm_eps"])
    def attn(s, x, cos, sin):
        B, S, _ = x.shape
        q = s.q(x).view(B, S, s.h, s.hd).transpose(1, 2)
        k = s.k(x).view(B, S, s.kv, s.hd).transpose(1, 2)
        v = s.v(x).view(B, S, s.kv, s.hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        # GQA: kv head j serves query heads j*rep .. j*rep+rep-1 (HF's repeat_kv).
        k, v = k.repeat_interleave(s.h // s.kv, dim=1), v.repeat_interleave(s.h // s.kv, dim=1)
        if hasattr(F, "scaled_dot_product_attention"):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # torch < 2.0: materialised causal softmax, fp32 for the softmax
            w = (q @ k.transpose(-1, -2)) / math.sqrt(s.hd)
            w = w.masked_fill(torch.ones(S, S, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
            y = torch.softmax(w.float(), dim=-1).to(q.dtype) @ v
        return s.o(y.transpose(1, 2).reshape(B, S, s.h * s.hd))
    def forward(s, x, cos, sin):
        x = x + s.attn(s.n1(x), cos, sin)
        h = s.n2(x)
        return x + s.down(F.silu(s.gate(h)) * s.up(h))

class FallbackLlama(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.c = c
        s.embed = nn.Embedding(c["vocab_size"], c["hidden_size"])
        s.layers = nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))
        s.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        s.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        for m in s.modules():  # HF's init: N(0, initializer_range=0.02), norms at 1
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
        if c["tie_word_embeddings"]:
            s.lm_head.weight = s.embed.weight
        s.checkpoint = False
    def gradient_checkpointing_enable(s, **_):
        s.checkpoint = True
    def forward(s, input_ids, labels):
        S, hd = input_ids.shape[1], s.c["head_dim"]
        x = s.embed(input_ids)
        # RoPE tables in fp32, then cast to the activation dtype (as HF does).
        inv = 1.0 / (s.c["rope_theta"] ** (torch.arange(0, hd, 2, device=x.device).float() / hd))
        f = torch.outer(torch.arange(S, device=x.device).float(), inv)
        emb = torch.cat((f, f), dim=-1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        for layer in s.layers:
            if s.checkpoint and s.training:  # keep only layer inputs; recompute the layer in backward
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin)
        logits = s.lm_head(s.norm(x))
        # Shift inside, like HF: position t predicts labels[t+1]; fp32 logits for the loss, like HF.
        return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)

# ---------------------------------------------------------------- building
def hf_config(c):
    kw = {k: c[k] for k in KEYS if k != "rope_theta"}
    if int(transformers.__version__.split(".")[0]) >= 5:  # v5 folds rope_theta into rope_parameters
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": float(c["rope_theta"])}
    else:
        kw["rope_theta"] = float(c["rope_theta"])
    cfg = transformers.LlamaConfig(**kw, attn_implementation="sdpa", use_cache=False, initializer_range=0.02)
    theta = getattr(cfg, "rope_parameters", None) or {"rope_theta": getattr(cfg, "rope_theta", None)}
    assert float(theta["rope_theta"]) == float(c["rope_theta"]), f"rope_theta did not reach LlamaConfig: {theta}"
    return cfg

def build(c, args, mode):
    """A fresh seeded model + AdamW. Weights are created directly in their dtype on the device (no
    fp32 copy on the host), which keeps HF's fp32 rotary inv_freq buffer fp32 as from_pretrained does."""
    torch.manual_seed(args.seed)
    param_dtype = torch.float32 if args.master_fp32 else args.torch_dtype
    old = torch.get_default_dtype()
    torch.set_default_dtype(param_dtype)
    try:
        ctx = torch.device(args.device) if hasattr(torch.device, "__enter__") else None  # torch >= 2.0
        if ctx is not None:
            ctx.__enter__()
        try:
            model = transformers.LlamaForCausalLM(hf_config(c)) if transformers else FallbackLlama(c)
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
    finally:
        torch.set_default_dtype(old)
    model.to(args.device).train()
    if mode == "checkpoint":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    kw = dict(lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    if args.device == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters:
        kw["fused"] = True  # moments take the param dtype: bf16 in pure-bf16 mode
    return model, torch.optim.AdamW(model.parameters(), **kw)

def sync(args):
    if args.device == "cuda":
        torch.cuda.synchronize()

def run(c, args, mode, S, steps):
    """Returns a row dict; raises on OOM (the caller frees memory once the traceback is gone)."""
    model, opt = build(c, args, mode)
    ids = torch.randint(0, c["vocab_size"], (1, S), generator=torch.Generator().manual_seed(args.seed + S)).to(args.device)
    # Autocast only for --master-fp32 with a bf16 compute dtype (CPU autocast rejects fp32 targets).
    use_amp = args.master_fp32 and args.torch_dtype != torch.float32
    amp = (lambda: torch.autocast(args.device, dtype=args.torch_dtype)) if use_amp else contextlib.nullcontext
    if args.device == "cuda":
        torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
        weights = torch.cuda.memory_allocated()
    times, losses = [], []
    for _ in range(steps):
        sync(args); t0 = time.perf_counter()
        with amp():
            loss = model(input_ids=ids, labels=ids).loss if transformers else model(ids, ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(args); times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    dt = statistics.median(times[1:] if len(times) > 1 else times)
    row = dict(mode=mode, seq=S, status="ok", tokens_per_s=S / dt, step_ms=1000 * dt, step_times_s=times, losses=losses)
    if args.device == "cuda":
        row.update(weights_gib=weights / 2**30, peak_allocated_gib=torch.cuda.max_memory_allocated() / 2**30,
                   peak_reserved_gib=torch.cuda.max_memory_reserved() / 2**30)
    return row

def is_oom(e):
    return isinstance(e, getattr(torch.cuda, "OutOfMemoryError", ())) or (isinstance(e, RuntimeError) and "out of memory" in str(e))

def attempt(c, args, mode, S, steps):
    try:
        row = run(c, args, mode, S, steps)
    except Exception as e:
        if not is_oom(e):
            raise
        row = dict(mode=mode, seq=S, status="OOM", error=str(e).splitlines()[0][:300])
    # The exception (and its frames holding the model/activations) is gone here, so this frees it all.
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return row

def max_seq(c, args, mode, rows):
    """Bisection in units of 1024 for the largest S that trains --max-seq-steps steps without OOM.

    Two by default: AdamW allocates its moments in the first step's opt.step(), so a first step's
    forward and backward run without them and fit more than any later step does."""
    ok = [r["seq"] for r in rows if r["mode"] == mode and r["status"] == "ok" and args.steps >= args.max_seq_steps]
    bad = [r["seq"] for r in rows if r["mode"] == mode and r["status"] == "OOM"]
    lo, probes = (max(ok) // 1024 if ok else 0), []
    hi = -(-min(bad) // 1024) if bad else None
    def fits(k):
        r = attempt(c, args, mode, 1024 * k, args.max_seq_steps); probes.append(r)
        print(f"  max-seq {mode}: S={1024 * k} {r['status']}", flush=True)
        return r["status"] == "ok"
    while hi is None:  # nothing has failed yet: double until something does
        k = max(1, 2 * lo)
        if 1024 * k > args.max_seq_limit:
            hi = lo + 1  # stop: report lo as ">= lo"
            break
        if fits(k): lo = k
        else: hi = k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid): lo = mid
        else: hi = mid
    return dict(mode=mode, max_seq=1024 * lo, first_oom=1024 * hi if 1024 * hi <= args.max_seq_limit else None, probes=probes)

def fmt(x, spec):
    return "-" if x is None else format(x, spec)

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="llama-3.2-1b", choices=sorted(PRESETS))
    p.add_argument("--config", help="HF-style config.json (overrides --model; unknown keys ignored)")
    p.add_argument("--seqs", default="4096,8192,16384,32768,65536")
    p.add_argument("--modes", default="vanilla,checkpoint")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--master-fp32", action="store_true", help="fp32 weights/grads/moments, autocast(bf16) compute")
    p.add_argument("--max-seq", action="store_true", help="bisect the largest S per mode (cuda only)")
    p.add_argument("--memory-gb", type=float, help="cap this process's GPU memory (set_per_process_memory_fraction)")
    p.add_argument("--max-seq-limit", type=int, default=1 << 20, help="largest S the --max-seq search tries")
    p.add_argument("--max-seq-steps", type=int, default=2,
                   help="steps each --max-seq probe trains: from the second on, AdamW's moments are allocated (1: the first step only)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="bench/results/pytorch-baseline.json")
    args = p.parse_args()
    args.torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA is not available; use --device cpu --dtype fp32 for a quick check")
    if args.max_seq and args.device != "cuda":
        sys.exit("--max-seq needs --device cuda (it searches for the GPU's memory limit)")
    raw = json.load(open(args.config)) if args.config else PRESETS[args.model]
    c = {**DEFAULTS, **{k: raw[k] for k in KEYS if k in raw}}
    c["head_dim"] = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    seqs, modes = [int(s) for s in args.seqs.split(",")], args.modes.split(",")
    assert all(m in ("vanilla", "checkpoint") for m in modes), "modes: vanilla, checkpoint"

    gpu, total = None, None
    if args.device == "cuda":
        gpu, total = torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).total_memory
        if args.memory_gb:  # allocations past this raise OutOfMemoryError, like a smaller GPU
            torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_gb * 2**30 / total))
    impl = "transformers" if transformers else "fallback"
    print(f"{args.config or args.model} on {gpu or 'cpu'}, {impl}, {args.dtype}{' + fp32 master' if args.master_fp32 else ''}, "
          f"batch 1, {args.steps} steps", flush=True)

    rows = []
    for mode in modes:
        for S in seqs:
            rows.append(attempt(c, args, mode, S, args.steps))
            r = rows[-1]
            print(f"  {mode} S={S}: {r['status']}" + (f" {r['tokens_per_s']:.0f} tok/s" if r["status"] == "ok" else ""), flush=True)
    limits = [max_seq(c, args, m, rows) for m in modes] if args.max_seq else []

    print(f"\n{'mode':<11} {'S':>7} {'tokens/s':>10} {'step ms':>9} {'peak alloc GiB':>15} {'peak rsvd GiB':>14} {'loss':>8}")
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['mode']:<11} {r['seq']:>7} {'OOM':>10}")
            continue
        print(f"{r['mode']:<11} {r['seq']:>7} {r['tokens_per_s']:>10.0f} {r['step_ms']:>9.1f} {fmt(r.get('peak_allocated_gib'), '.2f'):>15} "
              f"{fmt(r.get('peak_reserved_gib'), '.2f'):>14} {r['losses'][-1]:>8.4f}")
    for l in limits:
        print(f"max S ({l['mode']}): {l['max_seq']}" + ("" if l["first_oom"] else f" (search stopped at --max-seq-limit)"))

    d, hd, L = c["hidden_size"], c["head_dim"], c["num_hidden_layers"]
    per_layer = 2 * d * hd * (c["num_attention_heads"] + c["num_key_value_heads"]) + 3 * d * c["intermediate_size"] + 2 * d
    n_params = c["vocab_size"] * d * (1 if c["tie_word_embeddings"] else 2) + L * per_layer + d
    out = dict(implementation=impl, gpu=gpu, gpu_total_gib=total / 2**30 if total else None, device=args.device,
               torch=torch.__version__, cuda=torch.version.cuda, transformers=transformers.__version__ if transformers else None,
               python=platform.python_version(), date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               model=None if args.config else args.model, config_file=args.config, config=c,
               settings=dict(seqs=seqs, modes=modes, steps=args.steps, batch=1, dtype=args.dtype, master_fp32=args.master_fp32,
                             memory_gb=args.memory_gb, max_seq=args.max_seq, max_seq_steps=args.max_seq_steps, seed=args.seed, attn_implementation="sdpa" if transformers else
                             ("sdpa" if hasattr(F, "scaled_dot_product_attention") else "manual"),
                             optimizer="AdamW(lr=1e-4, betas=(0.9,0.95), wd=0.1" + (", fused)" if args.device == "cuda" else ")"),
                             timing="median step time over steps after the first; tokens/s = S / that"),
               parameters=n_params, rows=rows, max_seq=limits)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {args.out}")

if __name__ == "__main__":
    main()
