"""Loads a miniseq checkpoint folder with Hugging Face transformers, as is, and compares its
logits and loss with miniseq's on the same tokens, in float64 and in float32.

    npm run build
    python3 scripts/golden/check_from_pretrained.py runs/latest            # a run: its newest checkpoint
    python3 scripts/golden/check_from_pretrained.py runs/latest/checkpoints/step-00000300 --tokens 64

Needs torch and transformers. Exits 1 when the float64 numbers differ by more than 1e-9 or the
float32 ones by more than 1e-4 (relative to the largest logit), 0 otherwise; prints both.
"""

import argparse
import json
import os
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
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


def load(folder, dtype):
    kwargs = {"torch_dtype": dtype}
    try:
        return AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", **kwargs).eval()
    except TypeError:  # transformers before attn_implementation
        return AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()


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
    args = ap.parse_args()
    folder = checkpoint_folder(args.folder)
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    g = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(0, config["vocab_size"], (1, args.tokens), generator=g)

    failed = False
    for name, dtype in [("float64", torch.float64), ("float32", torch.float32)]:
        model = load(folder, dtype)
        with torch.no_grad():
            out = model(input_ids=tokens, labels=tokens)
        theirs_logits = out.logits[0].to(torch.float64)
        theirs_loss = float(out.loss)
        ours = miniseq(folder, tokens[0].tolist(), name)
        ours_logits = torch.tensor(ours["logits"], dtype=torch.float64)
        scale = float(theirs_logits.abs().max())
        logit_err = float((ours_logits - theirs_logits).abs().max()) / scale
        loss_err = abs(ours["loss"] - theirs_loss) / abs(theirs_loss)
        ok = logit_err <= TOLERANCE[name] and loss_err <= TOLERANCE[name]
        failed |= not ok
        print(
            f"{name}: {type(model).__name__} ({config.get('model_type')}) from {folder}: "
            f"loss transformers {theirs_loss:.12g} miniseq {ours['loss']:.12g} (rel. err {loss_err:.2e}); "
            f"logits max err / max |logit| {logit_err:.2e} over {args.tokens} tokens "
            f"-> {'ok' if ok else 'FAIL'} (tolerance {TOLERANCE[name]:g})"
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
