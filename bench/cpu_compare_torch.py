#!/usr/bin/env python3
"""The PyTorch side of bench/cpu-compare.ts: the same tiny Llama (the plain-PyTorch FallbackLlama of
bench/pytorch_baseline.py), batch B x S, fp32, AdamW, on the CPU. Prints one JSON line:
{"tokens_per_s", "step_ms", "losses", "threads", "torch"}; tokens/s is the median over the steps
after the first.

  python3 bench/cpu_compare_torch.py '<config json>' BATCH SEQ STEPS
"""
import json, os, statistics, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
from pytorch_baseline import FallbackLlama  # noqa: E402

c, batch, seq, steps = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
c.setdefault("head_dim", c["hidden_size"] // c["num_attention_heads"])
torch.set_num_threads(os.cpu_count() or 1)  # every core: the comparison is of the whole machine
torch.manual_seed(1)
model = FallbackLlama(c).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
ids = torch.randint(0, c["vocab_size"], (batch, seq + 1), generator=torch.Generator().manual_seed(1))
times, losses = [], []
for _ in range(steps):
    t0 = time.perf_counter()
    loss = model(ids, ids)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    times.append(time.perf_counter() - t0)
    losses.append(loss.item())
dt = statistics.median(times[1:] if len(times) > 1 else times)
print(json.dumps(dict(tokens_per_s=batch * seq / dt, step_ms=1000 * dt, losses=losses,
                      threads=torch.get_num_threads(), torch=torch.__version__)))
