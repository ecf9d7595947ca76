"""Loads a miniseq checkpoint folder with Hugging Face transformers, as is
(AutoModelForCausalLM.from_pretrained(folder)), and compares its logits and loss with miniseq's
on the same tokens, in float64 and in float32.

    npm run build
    python3 scripts/golden/check_from_pretrained.py runs/latest            # a run: its newest checkpoint
    python3 scripts/golden/check_from_pretrained.py runs/latest/checkpoints/step-00000300 --tokens 64
    python3 scripts/golden/check_from_pretrained.py runs/latest --reference  # no transformers here

Needs torch and transformers (--reference: torch only; the model is then make_golden.py's
plain-PyTorch one, read from the folder's model.safetensors, and from_pretrained is not tried).
Exits 1 when the float64 numbers differ by more than 1e-9 or the float32 ones by more than 1e-4
(relative to the largest logit), 0 otherwise; prints both.

transformers computes RoPE's angles in float32 even in a float64 model; for the float64
comparison the rotary modules get make_golden.py's float64 frequencies (as the golden fixtures do).
"""

import argparse
import json
import os
import struct
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_golden  # noqa: E402  (the plain-PyTorch reference and RoPE frequencies)

FORWARD = os.path.join(HERE, "miniseq-forward.mjs")
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}


def checkpoint_folder(path):
    """A run folder's newest step-N (as `miniseq generate --from` picks it), else the folder itself."""
    ckpts = os.path.join(path, "checkpoints")
    if os.path.isdir(ckpts):
        steps = sorted(d for d in os.listdir(ckpts) if d.startswith("step-") and ".tmp" not in d)
        if not steps:
            sys.exit(f"{ckpts} holds no checkpoint")
        return os.path.join(ckpts, steps[-1])
    return path


def float64_rope(model, cfg):
    """Gives the rotary modules float64 angles from float64 inverse frequencies."""
    ours = make_golden.inv_freq_of(cfg)
    for module in model.modules():
        if hasattr(module, "inv_freq") and isinstance(module.inv_freq, torch.Tensor):
            scaling = float(getattr(module, "attention_scaling", 1.0))

            def forward64(x, position_ids, *args, _inv=ours, _scaling=scaling, **kwargs):
                freqs = position_ids[:, :, None].to(torch.float64) * _inv[None, None, :]
                emb = torch.cat((freqs, freqs), dim=-1)
                return (emb.cos() * _scaling).to(x.dtype), (emb.sin() * _scaling).to(x.dtype)

            module.forward = forward64


def transformers_run(folder, cfg, dtype, tokens):
    """from_pretrained(folder) as is; its logits [S, V] (float64) and loss with labels = input_ids."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=dtype, attn_implementation="eager")
    except TypeError:  # transformers before attn_implementation
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=dtype)
    model.eval()
    if dtype == torch.float64:
        float64_rope(model, cfg)
    with torch.no_grad():
        out = model(input_ids=tokens, labels=tokens, use_cache=False)
    return type(model).__name__, out.logits[0].to(torch.float64), float(out.loss)


def read_safetensors(path):
    """F32/F64/BF16/F16 tensors of a safetensors file, as float64 torch tensors."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = bytearray(data[base + b : base + end])
        if e["dtype"] in ("BF16", "F16"):
            bits = torch.frombuffer(raw, dtype=torch.int16)
            t = bits.view(torch.bfloat16 if e["dtype"] == "BF16" else torch.float16)
        else:
            t = torch.frombuffer(raw, dtype={"F32": torch.float32, "F64": torch.float64}[e["dtype"]])
        out[name] = t.to(torch.float64).reshape(e["shape"])
    return out


def reference_run(folder, cfg, dtype, tokens):
    """make_golden.py's plain-PyTorch model on the folder's weights, always in float64 (miniseq's
    float32 numbers are then compared with the exact ones)."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    W = {k: v for file in files for k, v in read_safetensors(os.path.join(folder, file)).items()}
    with torch.no_grad():
        logits = make_golden.reference_logits(cfg, W, tokens)
    loss = torch.nn.functional.cross_entropy(logits[0, :-1].to(torch.float64), tokens[0, 1:])
    return "plain-PyTorch reference", logits[0].to(torch.float64), float(loss)


def miniseq(folder, tokens, dtype):
    out = subprocess.run(
        ["node", FORWARD, folder, "--tokens", ",".join(map(str, tokens)), "--dtype", dtype],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="a miniseq run folder or checkpoint step folder (or any HF folder)")
    ap.add_argument("--tokens", type=int, default=32, help="how many random tokens to score (default 32)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", action="store_true", help="compare with the plain-PyTorch model, not transformers")
    args = ap.parse_args()
    folder = checkpoint_folder(args.folder)
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    # What the reference needs spelled out, with transformers' defaults.
    cfg = {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False, **config}
    cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    run = reference_run if args.reference else transformers_run
    g = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(0, config["vocab_size"], (1, args.tokens), generator=g)

    failed = False
    for name, dtype in [("float64", torch.float64), ("float32", torch.float32)]:
        who, theirs_logits, theirs_loss = run(folder, cfg, dtype, tokens)
        ours = miniseq(folder, tokens[0].tolist(), name)
        ours_logits = torch.tensor(ours["logits"], dtype=torch.float64)
        scale = float(theirs_logits.abs().max())
        logit_err = float((ours_logits - theirs_logits).abs().max()) / scale
        loss_err = abs(ours["loss"] - theirs_loss) / abs(theirs_loss)
        ok = logit_err <= TOLERANCE[name] and loss_err <= TOLERANCE[name]
        failed |= not ok
        print(
            f"{name}: {who} ({config.get('model_type')}) from {folder}: "
            f"loss theirs {theirs_loss:.12g} miniseq {ours['loss']:.12g} (rel. err {loss_err:.2e}); "
            f"logits max err / max |logit| {logit_err:.2e} over {args.tokens} tokens "
            f"-> {'ok' if ok else 'FAIL'} (tolerance {TOLERANCE[name]:g})"
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
