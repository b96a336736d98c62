"""Training throughput of utils.gpt.GPT in L13's configuration (4 layers, 4 heads, d=128, block 64, batch 32).

    make bench        (or: .venv/bin/python benchmarks/gpt_speed.py)

Prints tokens per second of full training steps (forward, backward, AdamW) after a short warm-up. A benchmark,
not a test: the number depends on the machine and on what else it is doing.
"""
from __future__ import annotations

import time

import torch

from utils.gpt import GPT, GPTConfig


def main(steps: int = 30, warmup: int = 5, batch: int = 32) -> float:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=96, block_size=64, n_layer=4, n_head=4, n_embd=128)
    model = GPT(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, config.vocab_size, (batch, config.block_size + 1))
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    tokens_per_s = steps * batch * config.block_size / seconds
    print(f"GPT {model.num_params() / 1e6:.2f}M params, {torch.get_num_threads()} threads: "
          f"{tokens_per_s:,.0f} tokens/s ({seconds / steps * 1000:.0f} ms/step)")
    return tokens_per_s


if __name__ == "__main__":
    main()
