"""A small HTTP service over an export directory: FastAPI + uvicorn, no torch.

    GET  /health   -> {"status": "ok", "model": ..., "kind": ..., "precision": ..., "labels": [...]}
    POST /predict  body: a JSON list of texts (or {"texts": [...]})
                   -> {"entities": [[entity, ...] per text]}, entities as `xdistil_export.runtime.Entity`

Every bad request gets a 4xx with a JSON ``{"detail": "..."}`` naming the problem:

- body larger than ``max_body_bytes``: 413, decided from ``Content-Length`` before the
  body is read, and by counting bytes while it streams in (chunked uploads);
- malformed JSON (or not UTF-8): 400;
- not a list of strings: 422;
- more than ``max_texts`` texts or a text longer than ``max_chars`` characters: 413.

Inference runs in worker threads (at most ``max_concurrency`` at once), so the event
loop keeps accepting requests; one onnxruntime session serves them all (``run`` is
thread-safe). `serve` binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import os

import anyio
from fastapi import FastAPI, HTTPException, Request
from xdistil_export.runtime import Predictor


def create_app(
    predictor: Predictor,
    max_body_bytes: int = 1_000_000,
    max_texts: int = 256,
    max_chars: int = 10_000,
    batch_size: int = 32,
    max_concurrency: int = 4,
) -> FastAPI:
    """The FastAPI app for one loaded `Predictor` (no side effects until served)."""
    app = FastAPI(title="xdistil NER", summary="named entities from an exported xdistil model")
    limiter = anyio.CapacityLimiter(max_concurrency)
    info = {
        "status": "ok",
        "model": predictor.manifest.get("source", str(predictor.path)),
        "kind": predictor.kind,
        "precision": predictor.precision,
        "labels": predictor.labels,
        "limits": {"max_body_bytes": max_body_bytes, "max_texts": max_texts, "max_chars": max_chars},
    }

    @app.get("/health")
    async def health() -> dict:
        return info

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        body = await _read_body(request, max_body_bytes)
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HTTPException(400, f"malformed JSON: {e}") from None
        texts = data.get("texts") if isinstance(data, dict) else data
        if not isinstance(texts, list):
            raise HTTPException(422, 'expected a JSON list of texts (or {"texts": [...]})')
        if len(texts) > max_texts:
            raise HTTPException(413, f"{len(texts)} texts in one request; the limit is {max_texts}")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise HTTPException(422, f"item {i} is {type(t).__name__}, not a string")
            if len(t) > max_chars:
                raise HTTPException(413, f"text {i} has {len(t)} characters; the limit is {max_chars}")
        entities = await anyio.to_thread.run_sync(predictor.predict, texts, batch_size, limiter=limiter)
        return {"entities": entities}

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, f"bad Content-Length {declared!r}")
        if int(declared) > limit:
            raise HTTPException(413, f"body of {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"body over {limit} bytes")
    return bytes(body)


def serve(
    path: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8080,
    precision: str = "fp32",
    threads: int | None = None,
    log_level: str = "info",
    **limits,
) -> None:
    """Load the export at ``path`` and serve it until interrupted (``limits``: see `create_app`)."""
    import uvicorn

    app = create_app(Predictor(path, precision=precision, threads=threads), **limits)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=5)
