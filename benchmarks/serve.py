"""HTTP serving throughput and latency: 1 and 16 concurrent clients, micro-batching on and off.

    python -m benchmarks.serve runs/demo/export/bilstm --texts ../shared/data/.../dev.txt \
        --seconds 5 --out benchmarks/results/serve [--precision int8]

For each mode (micro-batching on, off) the server runs as its own process
(``python -m xdistil_export.cli serve``, loopback, ``--threads`` onnxruntime threads), so
the clients do not share its interpreter. For each client count, that many clients
(asyncio + httpx, one connection each) send one-text requests back to back for
``--seconds`` after a short warm-up; texts are drawn in turn from ``--texts`` (one per
line, or CoNLL with ``--conll``) or from built-in sentences. Per cell: requests/s, words/s,
and p50 / p95 / max latency in ms. Bounded: 4 cells of ``--seconds`` each plus start-up.

Writes ``serve.json`` and ``serve.md`` into ``--out`` (default: print only).
"""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from xdistil_export.text import iter_conll_words, iter_text_lines, split_words

from benchmarks import preamble, timing

SENTENCES = [
    "Angela Merkel besuchte Paris mit Emmanuel Macron .",
    "The United Nations opened an office in Nairobi , Kenya , in 1996 .",
    "Владимир Набоков родился в Санкт-Петербурге .",
    "ذهب أحمد إلى القاهرة مع فريق الأمم المتحدة .",
    "महात्मा गांधी का जन्म पोरबंदर में हुआ था ।",
    "La Universidad de Buenos Aires fue fundada en 1821 .",
]


def load_texts(path: str | None, conll: bool, limit: int) -> list[str]:
    if path is None:
        return SENTENCES
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        texts = [" ".join(w) for w in iter_conll_words(f)] if conll else [t for t in iter_text_lines(f) if t.strip()]
    if not texts:
        raise ValueError(f"{path}: no texts")
    return texts[:limit]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(export: str, batching: bool, threads: int, batch_wait_ms: float,
                 precision: str = "fp32") -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "xdistil_export.cli", "serve", export, "--port", str(port), "--threads", str(threads),
           "--batch-wait-ms", str(batch_wait_ms), "--precision", precision] + ([] if batching else ["--no-batching"])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.communicate()[1][-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError("server did not start within 60 s")


async def _client(url: str, texts: list[str], offset: int, stop_at: float, warm_until: float, out: list) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        i = offset
        while (now := time.perf_counter()) < stop_at:
            text = texts[i % len(texts)]
            r = await client.post("/predict", json=[text])
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
            if now >= warm_until:
                out.append((time.perf_counter() - now, len(split_words(text))))
            i += 1


def measure(url: str, texts: list[str], clients: int, seconds: float, warmup: float = 1.0) -> dict:
    samples: list[tuple[float, int]] = []

    async def main():
        t0 = time.perf_counter()
        await asyncio.gather(*(_client(url, texts, k * 7, t0 + warmup + seconds, t0 + warmup, samples)
                               for k in range(clients)))

    asyncio.run(main())
    lat = [1e3 * s for s, _ in samples]
    return {"clients": clients, "requests": len(samples), "requests_per_s": len(samples) / seconds,
            "words_per_s": sum(w for _, w in samples) / seconds, **timing.quantiles(lat), "max_ms": max(lat)}


def run(export: str, texts: list[str], seconds: float = 5.0, clients: tuple[int, ...] = (1, 16), threads: int = 2,
        batch_wait_ms: float = 2.0, warmup: float = 1.0, precision: str = "fp32",
        command: str = "python -m benchmarks.serve") -> dict:
    cells = []
    for batching in (True, False):
        proc, url = start_server(export, batching, threads, batch_wait_ms, precision)
        try:
            for n in clients:
                cell = measure(url, texts, n, seconds, warmup)
                cell["micro_batching"] = batching
                cells.append(cell)
                print(f"batching {'on ' if batching else 'off'} clients {n:2d}: {cell['requests_per_s']:8.1f} req/s, "
                      f"p95 {cell['p95_ms']:.1f} ms", file=sys.stderr)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return {"export": Path(export).name, "precision": precision, "texts": len(texts), "seconds_per_cell": seconds,
            "threads": threads,
            "batch_wait_ms": batch_wait_ms, "warmup_s": warmup, "cells": cells, "cpus": os.cpu_count(),
            "machine": platform.machine(), "python": platform.python_version(),
            "command": command}


def markdown(result: dict) -> str:
    lines = [f"# Serving `{result['export']}` ({result.get('precision', 'fp32')}) on loopback "
             f"({result['threads']} onnxruntime threads, {result['cpus']} CPUs)", "",
             "| micro-batching | clients | requests/s | words/s | p50 ms | p95 ms | max ms |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for c in result["cells"]:
        lines.append(f"| {'on' if c['micro_batching'] else 'off'} | {c['clients']} | {c['requests_per_s']:.1f} | "
                     f"{c['words_per_s']:.0f} | {c['p50_ms']:.1f} | {c['p95_ms']:.1f} | {c['max_ms']:.1f} |")
    lines += ["", f"One text per request, {result['seconds_per_cell']} s per cell after {result['warmup_s']} s of warm-up; "
              f"batch wait {result['batch_wait_ms']} ms.", "", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = preamble.parser(__doc__, quiet=False)
    p.add_argument("export", help="export directory")
    p.add_argument("--texts", help="texts, one per line (or CoNLL with --conll); default: built-in sentences")
    p.add_argument("--conll", action="store_true")
    p.add_argument("--limit", type=int, default=2000, help="at most this many texts")
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    p.add_argument("--threads", type=int, default=2, help="onnxruntime threads of the server")
    p.add_argument("--batch-wait-ms", type=float, default=2.0)
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32", help="model the server runs")
    p.add_argument("--out", help="folder for serve.json and serve.md")
    args = p.parse_args(argv)
    result = run(args.export, load_texts(args.texts, args.conll, args.limit), args.seconds, tuple(args.clients),
                 args.threads, args.batch_wait_ms, precision=args.precision, command=preamble.start("serve", argv))
    timing.show(args.out, "serve", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
