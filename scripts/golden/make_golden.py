#!/usr/bin/env python3
"""Golden fixtures for test/architectures.test.ts: a tiny random model of each architecture
miniseq computes (llama with llama3 RoPE scaling, mistral, qwen2, gemma2), its logits, loss and
every parameter gradient in float64, with the weights and inputs that made them.

    python3 scripts/golden/make_golden.py [--out test/fixtures/golden] [--reference]

With Hugging Face transformers importable, the numbers come from transformers' own models
(eager attention, float64). Without it (or with --reference) they come from the plain-PyTorch
float64 model below, written from transformers' semantics. Each fixture records which one made
it in its metadata ("generator").

transformers computes RoPE's angles in float32 even in a float64 model (the rotary module casts
its frequencies with .float()). So that every number is float64, the rotary modules are given a
float64 forward with the same formula (cos and sin of position x inv_freq, each half repeated),
and their own float32 inv_freq is saved as "inv_freq_transformers", which the tests compare with
miniseq's to float32 precision.

Each fixture is a safetensors file (no dependency beyond torch: written by hand below):
  weight.<HF name>  F32  the weights (float32 values, so both float32 and float64 runs use them exactly)
  grad.<HF name>    F64  d loss / d weight
  logits            F64  [B, S, V]
  tokens, targets   I32  [B, S]; targets are already shifted (-100 = ignored)
  inv_freq          F64  RoPE's inverse frequencies, scaling applied
  __metadata__      generator, config (the HF config.json), loss (repr of a float64)
and rope.safetensors: inverse frequencies of published configs' RoPE scaling (llama3, linear), float64.
"""
import argparse
import json
import math
import os
import struct
import sys

import torch

B, S = 2, 11

BASE = {
    "hidden_size": 16,
    "intermediate_size": 8,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 8,
    "vocab_size": 16,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "attention_dropout": 0.0,
}

# One config per architecture, each with what makes it differ from Llama switched on and large
# enough to matter at S = 11 (windows of 3 tokens, soft-caps near the scores' size).
CONFIGS = {
    "llama": {
        **BASE,
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        # wavelengths 6.3, 63, 628, 6283 against 64/8 = 8 and 64/1 = 64: one of each llama3 band
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 8.0,
            "original_max_position_embeddings": 64,
        },
        "max_position_embeddings": 512,
    },
    "mistral": {**BASE, "model_type": "mistral", "architectures": ["MistralForCausalLM"], "sliding_window": 3},
    "qwen2": {
        **BASE,
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "rope_theta": 1000000.0,
        "use_sliding_window": False,
        "tie_word_embeddings": True,
    },
    "gemma2": {
        **BASE,
        "model_type": "gemma2",
        "architectures": ["Gemma2ForCausalLM"],
        "hidden_activation": "gelu_pytorch_tanh",
        "query_pre_attn_scalar": 6,
        "sliding_window": 3,
        "attn_logit_softcapping": 1.5,
        "final_logit_softcapping": 2.0,
        "tie_word_embeddings": True,
    },
}


# ---------- the architectures' semantics, in plain PyTorch ----------


def inv_freq_of(cfg):
    """RoPE's inverse frequencies (float64), with rope_scaling as transformers applies it."""
    d = cfg["head_dim"]
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    rs = cfg.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "default":
        return inv
    if kind == "linear":
        return inv / rs["factor"]
    assert kind == "llama3", kind
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    out = inv.clone()
    for i in range(len(inv)):
        w = wavelen[i].item()
        if w < old / high:
            continue
        if w > old / low:
            out[i] = inv[i] / factor
        else:
            smooth = (old / w - low) / (high - low)
            out[i] = (1 - smooth) * inv[i] / factor + smooth * inv[i]
    return out


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def cos_sin(inv, positions):
    freqs = positions[:, None].to(torch.float64) * inv[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def windows_of(cfg):
    L, t = cfg["num_hidden_layers"], cfg["model_type"]
    w = cfg.get("sliding_window")
    if t == "mistral":
        return [w or 0] * L
    if t == "gemma2":
        return [(w or 0) if i % 2 == 0 else 0 for i in range(L)]
    if t == "qwen2" and cfg.get("use_sliding_window"):
        return [w if i >= cfg.get("max_window_layers", 28) else 0 for i in range(L)]
    return [0] * L


# transformers builds each decoder's embed_tokens as nn.Embedding(..., padding_idx=pad_token_id):
# the lookup sends no gradient to the padding row (a tied LM head still does). Gemma2Config
# defaults pad_token_id to 0; Llama, Mistral and Qwen2 default to None. Leaving this out made
# the reference's tied embedding gradient differ from transformers' in row 0 alone.
DEFAULT_PAD = {"gemma2": 0}


def pad_of(cfg):
    return cfg.get("pad_token_id", DEFAULT_PAD.get(cfg["model_type"]))


def rms_norm(x, w, eps, plus_one):
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y * (1.0 + w) if plus_one else y * w


def reference_logits(cfg, W, tokens):
    """The forward pass of cfg's architecture on float64 weights W (by HF name): logits [B, S, V]."""
    t = cfg["model_type"]
    gemma = t == "gemma2"
    d, hd, eps = cfg["hidden_size"], cfg["head_dim"], cfg["rms_norm_eps"]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    Bn, Sn = tokens.shape
    inv = inv_freq_of(cfg)
    cos, sin = cos_sin(inv, torch.arange(Sn))
    scale = (cfg["query_pre_attn_scalar"] if gemma else hd) ** -0.5
    cap = cfg.get("attn_logit_softcapping") if gemma else None
    q_pos = torch.arange(Sn)[:, None]
    k_pos = torch.arange(Sn)[None, :]

    def lin(x, name):
        y = x @ W[name + ".weight"].T
        return y + W[name + ".bias"] if name + ".bias" in W else y

    x = torch.nn.functional.embedding(tokens, W["model.embed_tokens.weight"], padding_idx=pad_of(cfg))
    if gemma:
        x = x * torch.tensor(d**0.5, dtype=x.dtype)
    for i, window in enumerate(windows_of(cfg)):
        p = f"model.layers.{i}."
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps, gemma)
        q = lin(h, p + "self_attn.q_proj").view(Bn, Sn, H, hd).transpose(1, 2)
        k = lin(h, p + "self_attn.k_proj").view(Bn, Sn, Hkv, hd).transpose(1, 2)
        v = lin(h, p + "self_attn.v_proj").view(Bn, Sn, Hkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
        scores = (q @ k.transpose(-1, -2)) * scale
        if cap:
            scores = torch.tanh(scores / cap) * cap
        hidden = k_pos > q_pos
        if window:
            hidden = hidden | (k_pos <= q_pos - window)
        scores = scores.masked_fill(hidden, float("-inf"))
        a = torch.softmax(scores, dim=-1) @ v
        a = lin(a.transpose(1, 2).reshape(Bn, Sn, H * hd), p + "self_attn.o_proj")
        if gemma:
            a = rms_norm(a, W[p + "post_attention_layernorm.weight"], eps, True)
        x = x + a
        h = rms_norm(x, W[p + ("pre_feedforward_layernorm.weight" if gemma else "post_attention_layernorm.weight")], eps, gemma)
        g = lin(h, p + "mlp.gate_proj")
        act = torch.nn.functional.gelu(g, approximate="tanh") if gemma else torch.nn.functional.silu(g)
        m = lin(act * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
        if gemma:
            m = rms_norm(m, W[p + "post_feedforward_layernorm.weight"], eps, True)
        x = x + m
    x = rms_norm(x, W["model.norm.weight"], eps, gemma)
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    logits = x @ head.T
    final_cap = cfg.get("final_logit_softcapping") if gemma else None
    if final_cap:
        logits = torch.tanh(logits / final_cap) * final_cap
    return logits


# ---------- transformers, when it is there ----------


def transformers_model(cfg, W):
    """transformers' own model for cfg (eager attention, float64), with W loaded, or None."""
    try:
        import transformers
    except ImportError:
        return None
    fields = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures")}
    config = transformers.AutoConfig.for_model(cfg["model_type"], **fields)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model = model.to(torch.float64).eval()  # eval: no dropout (there is none at 0.0 anyway)
    missing, unexpected = model.load_state_dict(W, strict=False)
    tied = {"lm_head.weight"} if cfg["tie_word_embeddings"] else set()
    assert set(missing) <= tied and not unexpected, (missing, unexpected)
    if cfg["tie_word_embeddings"]:
        model.tie_weights()
    hf_inv = None
    for module in model.modules():
        if hasattr(module, "inv_freq") and isinstance(module.inv_freq, torch.Tensor):
            hf_inv = module.inv_freq.detach().to(torch.float32).clone()
            scaling = float(getattr(module, "attention_scaling", 1.0))
            ours = inv_freq_of(cfg)

            def forward64(x, position_ids, *args, _inv=ours, _scaling=scaling, **kwargs):
                freqs = position_ids[:, :, None].to(torch.float64) * _inv[None, None, :]
                emb = torch.cat((freqs, freqs), dim=-1)
                return (emb.cos() * _scaling).to(x.dtype), (emb.sin() * _scaling).to(x.dtype)

            module.forward = forward64
    return model, hf_inv, f"transformers {transformers.__version__} (eager, float64; RoPE angles in float64)"


# ---------- safetensors, by hand ----------

TAGS = {torch.float32: ("F32", "<f"), torch.float64: ("F64", "<d"), torch.int32: ("I32", "<i")}


def write_safetensors(path, tensors, metadata):
    header, chunks, at = {"__metadata__": metadata}, [], 0
    for name, t in tensors.items():
        tag, fmt = TAGS[t.dtype]
        flat = t.contiguous().view(-1).tolist()
        data = struct.pack(f"<{len(flat)}{fmt[1]}", *flat)
        header[name] = {"dtype": tag, "shape": list(t.shape), "data_offsets": [at, at + len(data)]}
        chunks.append(data)
        at += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for c in chunks:
            f.write(c)


# ---------- one fixture ----------


def parameter_shapes(cfg):
    t, d, hd = cfg["model_type"], cfg["hidden_size"], cfg["head_dim"]
    H, Hkv, I, V = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["intermediate_size"], cfg["vocab_size"]
    shapes = {"model.embed_tokens.weight": (V, d)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (d,)
        for n, out in (("q", H * hd), ("k", Hkv * hd), ("v", Hkv * hd)):
            shapes[p + f"self_attn.{n}_proj.weight"] = (out, d)
            if t == "qwen2":
                shapes[p + f"self_attn.{n}_proj.bias"] = (out,)
        shapes[p + "self_attn.o_proj.weight"] = (d, H * hd)
        shapes[p + "post_attention_layernorm.weight"] = (d,)
        if t == "gemma2":
            shapes[p + "pre_feedforward_layernorm.weight"] = (d,)
            shapes[p + "post_feedforward_layernorm.weight"] = (d,)
        shapes[p + "mlp.gate_proj.weight"] = (I, d)
        shapes[p + "mlp.up_proj.weight"] = (I, d)
        shapes[p + "mlp.down_proj.weight"] = (d, I)
    shapes["model.norm.weight"] = (d,)
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (V, d)
    return shapes


def random_weights(cfg, gen):
    """float32 values: norms near their identity ((1 + w) for Gemma), matrices std 0.3, biases 0.2.
    Large enough that soft-caps bite; not so large that float32's rounding grows past 1e-5."""
    W = {}
    for name, shape in parameter_shapes(cfg).items():
        r = torch.randn(shape, generator=gen, dtype=torch.float32)
        if name.endswith("norm.weight"):
            W[name] = 0.1 * r if cfg["model_type"] == "gemma2" else 1.0 + 0.1 * r
        else:
            W[name] = (0.2 if name.endswith("bias") else 0.3) * r
    return W


def make(name, cfg, out, use_transformers):
    gen = torch.Generator().manual_seed(1 + sorted(CONFIGS).index(name))
    W32 = random_weights(cfg, gen)
    tokens = torch.randint(0, cfg["vocab_size"], (B, S), generator=gen, dtype=torch.int64)
    targets = torch.randint(0, cfg["vocab_size"], (B, S), generator=gen, dtype=torch.int64)
    targets[0, 3] = -100
    targets[1, 7] = -100
    W = {k: v.to(torch.float64).requires_grad_(True) for k, v in W32.items()}
    built = transformers_model(cfg, {k: v.detach() for k, v in W.items()}) if use_transformers else None
    if built is None:
        logits = reference_logits(cfg, W, tokens)
        params, hf_inv = W, None
        generator = f"plain-PyTorch float64 reference of transformers' semantics (torch {torch.__version__})"
    else:
        model, hf_inv, generator = built
        logits = model(input_ids=tokens, attention_mask=torch.ones_like(tokens), use_cache=False).logits
        params = dict(model.named_parameters())
    # Σ of token losses over the count of non-ignored targets, in float64 (transformers' own
    # loss function upcasts to float32, so it is computed here).
    count = (targets != -100).sum().item()
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, cfg["vocab_size"]), targets.reshape(-1), ignore_index=-100, reduction="sum"
    ) / count
    loss.backward()
    tensors = {f"weight.{k}": v for k, v in W32.items()}
    for k in W32:
        g = params[k].grad
        tensors[f"grad.{k}"] = g.detach().to(torch.float64)
    tensors["logits"] = logits.detach().to(torch.float64)
    tensors["tokens"] = tokens.to(torch.int32)
    tensors["targets"] = targets.to(torch.int32)
    tensors["inv_freq"] = inv_freq_of(cfg)
    if hf_inv is not None:
        tensors["inv_freq_transformers"] = hf_inv
    meta = {"generator": generator, "config": json.dumps(cfg), "loss": repr(loss.item())}
    path = os.path.join(out, f"{name}.safetensors")
    write_safetensors(path, tensors, meta)
    print(f"{path}: loss {loss.item():.12f}, {os.path.getsize(path)} bytes, by {generator}")


# Published configs' RoPE (head_dim 128 or 64): inv_freq from the reference formula, for rope.safetensors.
ROPE_CASES = {
    "llama-3.1-8b": {"head_dim": 128, "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
    "llama-3.2-1b": {"head_dim": 64, "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
    "linear-4": {"head_dim": 64, "rope_theta": 10000.0, "rope_scaling": {"type": "linear", "factor": 4.0}},
    "qwen2-7b": {"head_dim": 128, "rope_theta": 1000000.0},
}


def write_rope(out):
    """rope.safetensors: per case, its inv_freq (F64) and, in the metadata, its config fields."""
    path = os.path.join(out, "rope.safetensors")
    tensors = {name: inv_freq_of(c) for name, c in ROPE_CASES.items()}
    write_safetensors(path, tensors, {name: json.dumps(c) for name, c in ROPE_CASES.items()})
    print(f"{path}: {', '.join(tensors)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join("test", "fixtures", "golden"))
    ap.add_argument("--reference", action="store_true", help="use the plain-PyTorch reference even if transformers is there")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    for name, cfg in CONFIGS.items():
        make(name, cfg, args.out, not args.reference)
    write_rope(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
