"""OpenMP wait policy and a BiLSTM training step, alone and with a second process on the same cores.

    python -m benchmarks.omp_wait            # prints ms/step per policy, fp32 and bf16

Each cell runs a fresh process (OpenMP reads ``OMP_WAIT_POLICY`` when torch starts):
a 2-layer BiLSTM (E=50, H=200, 20k pieces) training step on a batch of 32 x 40 pieces.
"Shared" starts two such processes at once. This is what `xdistil.threads` decides from.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

STEP = r"""
import time, torch
from torch import nn
torch.manual_seed(0)
emb = nn.Embedding(20000, 50)
lstm = nn.LSTM(50, 200, num_layers=2, batch_first=True, bidirectional=True)
lin = nn.Linear(400, 7)
opt = torch.optim.Adam([*emb.parameters(), *lstm.parameters(), *lin.parameters()], 1e-3)
x = torch.randint(0, 20000, (32, 40))
def step(bf16):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        h, _ = lstm(emb(x)); loss = lin(h).float().pow(2).mean()
    loss.backward(); opt.step(); opt.zero_grad()
out = []
for bf16 in (False, True):
    for _ in range(3): step(bf16)
    t = time.perf_counter()
    for _ in range(20): step(bf16)
    out.append((time.perf_counter() - t) / 20 * 1000)
print(f"{out[0]:.1f} {out[1]:.1f}")
"""


def _cell(policy: str | None, shared: bool) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    n = 2 if shared else 1
    procs = [subprocess.Popen([sys.executable, "-c", STEP], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(n)]
    outs = [p.communicate()[0].split() for p in procs]
    return float(outs[0][0]), float(outs[0][1])


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    print("| policy | processes | fp32 ms/step | bf16 ms/step |\n|---|---:|---:|---:|")
    for policy in (None, "PASSIVE"):
        for shared in (False, True):
            fp32, bf16 = _cell(policy, shared)
            print(f"| {policy or 'default (spin)'} | {2 if shared else 1} | {fp32:.1f} | {bf16:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
