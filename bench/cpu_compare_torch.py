#!/usr/bin/env python3
"""The PyTorch side of bench/cpu-compare.ts: the same tiny Llama (the plain-PyTorch FallbackLlama of
bench/pytorch_baseline.py) trained with miniseq's settings, on the CPU:
  - the same initial weights and the same batches (files written by cpu-compare.ts),
  - the same loss (mean cross-entropy of S next-token targets per row, the inputs S tokens long),
  - the same AdamW: constant lr, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on matrices only,
    the global gradient norm clipped to 1.
Prints one JSON line: {"tokens_per_s", "step_ms", "losses", "threads", "torch"}; tokens/s is the
median over the steps after the first.

  python3 bench/cpu_compare_torch.py '<config json>' BATCH SEQ STEPS LR DATA_DIR [THREADS]
DATA_DIR holds params.json (name -> [offset, shape] into params.bin, float32, HF names) and
batches.bin (int32: per step the B*S input ids, then the B*S targets).
"""
import json, math, os, statistics, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from pytorch_baseline import FallbackLlama  # noqa: E402

c = json.loads(sys.argv[1])
batch, seq, steps, lr, data = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
c.setdefault("head_dim", c["hidden_size"] // c["num_attention_heads"])
# Every core by default: the comparison is of the whole machine.
torch.set_num_threads(int(sys.argv[7]) if len(sys.argv) > 7 else (os.cpu_count() or 1))
model = FallbackLlama(c).train()

# miniseq's (HF) parameter names -> FallbackLlama's.
def local_name(hf):
    hf = hf.replace("model.embed_tokens.", "embed.").replace("model.norm.", "norm.").replace("model.layers.", "layers.")
    for a, b in (("self_attn.q_proj", "q"), ("self_attn.k_proj", "k"), ("self_attn.v_proj", "v"), ("self_attn.o_proj", "o"),
                 ("mlp.gate_proj", "gate"), ("mlp.up_proj", "up"), ("mlp.down_proj", "down"),
                 ("input_layernorm", "n1"), ("post_attention_layernorm", "n2")):
        hf = hf.replace(a, b)
    return hf

with open(os.path.join(data, "params.json")) as f:
    manifest = json.load(f)
flat = torch.frombuffer(bytearray(open(os.path.join(data, "params.bin"), "rb").read()), dtype=torch.float32)
params = dict(model.named_parameters())
assert len(manifest) == len(params), f"{len(manifest)} tensors from miniseq, the PyTorch model has {len(params)}"
with torch.no_grad():
    for hf, (offset, shape) in manifest.items():
        p = params[local_name(hf)]
        assert list(p.shape) == shape, f"{hf}: miniseq {shape}, PyTorch {list(p.shape)}"
        p.copy_(flat[offset:offset + p.numel()].view(shape))
ids = torch.frombuffer(bytearray(open(os.path.join(data, "batches.bin"), "rb").read()), dtype=torch.int32).long()
ids = ids.view(steps, 2, batch, seq)

def loss_of(inputs, targets):
    """FallbackLlama.forward without its shift: inputs and targets are both [B, S]."""
    hd = c["head_dim"]
    x = model.embed(inputs)
    inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
    emb = torch.cat((torch.outer(torch.arange(seq).float(), inv),) * 2, dim=-1)
    cos, sin = emb.cos(), emb.sin()
    for layer in model.layers:
        x = layer(x, cos, sin)
    logits = model.lm_head(model.norm(x))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

matrices = [p for p in model.parameters() if p.dim() >= 2]
vectors = [p for p in model.parameters() if p.dim() < 2]
opt = torch.optim.AdamW([dict(params=matrices, weight_decay=0.1), dict(params=vectors, weight_decay=0.0)],
                        lr=lr, betas=(0.9, 0.95), eps=1e-8)
times, losses = [], []
for step in range(steps):
    t0 = time.perf_counter()
    loss = loss_of(ids[step, 0], ids[step, 1])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    times.append(time.perf_counter() - t0)
    losses.append(loss.item())
dt = statistics.median(times[1:] if len(times) > 1 else times)
print(json.dumps(dict(tokens_per_s=batch * seq / dt, step_ms=1000 * dt, losses=losses,
                      threads=torch.get_num_threads(), torch=torch.__version__)))
