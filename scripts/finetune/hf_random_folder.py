"""A Hugging Face model folder with random weights in a published model's exact config, saved by
transformers itself (config.json + model.safetensors, bf16): what `miniseq train --init-from`
reads when no real weights can be downloaded.

    python3 scripts/finetune/hf_random_folder.py qwen2-0.5b   /tmp/qwen2-0.5b     # Qwen/Qwen2-0.5B's config
    python3 scripts/finetune/hf_random_folder.py llama-3.2-1b /tmp/llama-3.2-1b   # meta-llama/Llama-3.2-1B's

Needs torch and transformers; uses the GPU when there is one (initialising 1B parameters on the
CPU takes a minute). Weights are transformers' own initialisation, seed 0.
"""
import sys

import torch
import transformers
from transformers import Qwen2Config, Qwen2ForCausalLM, LlamaConfig, LlamaForCausalLM
if len(sys.argv) != 3 or sys.argv[1] not in ("qwen2-0.5b", "llama-3.2-1b"):
    sys.exit("usage: hf_random_folder.py qwen2-0.5b|llama-3.2-1b OUT_DIR")
which, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
if which == "qwen2-0.5b":  # Qwen/Qwen2-0.5B's config.json
    cfg = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                      vocab_size=151936, max_position_embeddings=131072, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                      use_sliding_window=False, sliding_window=131072, max_window_layers=24, hidden_act="silu", bos_token_id=151643,
                      eos_token_id=151643, attention_dropout=0.0, torch_dtype="bfloat16")
    cls = Qwen2ForCausalLM
elif which == "llama-3.2-1b":  # meta-llama/Llama-3.2-1B's config.json
    cfg = LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                      head_dim=64, vocab_size=128256, max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
                      tie_word_embeddings=True, hidden_act="silu", bos_token_id=128000, eos_token_id=128001, attention_bias=False,
                      mlp_bias=False, rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 8192, "rope_type": "llama3"}, torch_dtype="bfloat16")
    cls = LlamaForCausalLM
with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
    model = cls(cfg)
model.to(torch.bfloat16).save_pretrained(out)
print(which, "saved", sum(p.numel() for p in model.parameters()), "parameters, transformers", transformers.__version__)
