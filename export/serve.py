"""A small HTTP service over an export directory: FastAPI + uvicorn, no torch.

    GET  /health   -> `Health`: status, model (the export folder's name), kind, precision, labels, limits
    POST /predict  body: a JSON list of texts, ``{"texts": [...]}`` or ``{"inputs": text | [texts]}``
                   (the Hugging Face inference convention)
                   -> `PredictResponse`: ``results`` (per text the record ``predict`` writes: text,
                      words, tags, scores, entities) and ``entities`` (per text, the same entities)

The request and response models are declared below, so ``/docs`` documents both.

Every bad request gets a 4xx with a JSON ``{"detail": "..."}`` naming the problem, never
a 5xx:

- body larger than ``max_body_bytes``: 413, decided from ``Content-Length`` before the
  body is read, and by counting bytes while it streams in (chunked uploads);
- anything the JSON parser refuses (malformed, not UTF-8, nested too deeply, an integer
  with thousands of digits): 400;
- not one of the accepted shapes, or a text that is not valid Unicode (a lone
  surrogate, which the tokenizer cannot encode): 422;
- more than ``max_texts`` texts or a text longer than ``max_chars`` characters: 413.

A client has ``request_timeout`` seconds (from connecting, or from its previous answer)
to send a whole request; half-sent and idle connections are closed then (`server_config`).
An export whose graph disagrees with its labels fails when it is loaded, not per request.

Inference runs in worker threads, so the event loop keeps accepting requests; one
onnxruntime session serves them all (``run`` is thread-safe). With ``micro_batching``
(the default) concurrent requests are queued and one worker runs them together: the
texts that arrived while the previous batch ran (and within ``batch_wait_ms``) share one
`Predictor.annotate` call, which sorts windows by length, so batching costs a lone client
at most ``batch_wait_ms``. Without it each request runs on its own (at most
``max_concurrency`` at once). `serve` binds 127.0.0.1 unless told otherwise.

int8 and batching: the int8 model is dynamically quantized, with one activation scale per
onnxruntime call, so under micro-batching a text's int8 scores -- and, for a few words in
a thousand, its tags -- depend on which other requests shared its batch (issue 24 measured 74 of
about 1,700 texts differed from the CLI's under 16 concurrent clients). fp32 answers do not
depend on batching at all; serve fp32, or int8 with ``--no-batching``, where answers must
repeat exactly whatever the load.
"""

from __future__ import annotations

import asyncio
import json
import os
from contextlib import asynccontextmanager

import anyio
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol
from xdistil_export.runtime import Predictor

# ---- the documented shapes --------------------------------------------------------------


class TextsRequest(BaseModel):
    texts: list[str] = Field(description="raw texts")


class InputsRequest(BaseModel):
    inputs: str | list[str] = Field(description="one raw text or a list (Hugging Face inference convention)")


class EntityOut(BaseModel):
    type: str
    text: str
    start_word: int = Field(description="index of the first word")
    end_word: int = Field(description="one past the last word")
    start_char: int = Field(description="text[start_char:end_char] is the entity")
    end_char: int
    entity_group: str = Field(description="as the Hugging Face pipeline: == type")
    score: float = Field(description="mean probability of the entity's word tags, in [0, 1]")
    word: str = Field(description="as the Hugging Face pipeline: == text")
    start: int = Field(description="as the Hugging Face pipeline: == start_char")
    end: int = Field(description="as the Hugging Face pipeline: == end_char")


class Annotation(BaseModel):
    text: str
    words: list[str]
    tags: list[str] = Field(description="one valid IOB2 tag per word")
    scores: list[float] = Field(description="probability of each word's tag")
    entities: list[EntityOut]


class PredictResponse(BaseModel):
    results: list[Annotation] = Field(description="one per input text, in order")
    entities: list[list[EntityOut]] = Field(description="per input text, its entities (== results[i].entities)")


class Health(BaseModel):
    status: str
    model: str
    kind: str
    precision: str
    labels: list[str]
    micro_batching: bool
    limits: dict[str, int]


REQUEST_SCHEMA = {
    "anyOf": [
        {"type": "array", "items": {"type": "string"}, "title": "a list of raw texts"},
        TextsRequest.model_json_schema(),
        InputsRequest.model_json_schema(),
    ]
}
ERRORS = {
    400: {"description": "the body is not JSON the parser accepts"},
    413: {"description": "body, text count or text length over the limits"},
    422: {"description": "JSON of the wrong shape, or a text that is not valid Unicode"},
}


# ---- the app -------------------------------------------------------------------------


def create_app(
    predictor: Predictor,
    max_body_bytes: int = 1_000_000,
    max_texts: int = 256,
    max_chars: int = 10_000,
    batch_size: int = 32,
    max_concurrency: int = 4,
    micro_batching: bool = True,
    batch_wait_ms: float = 2.0,
) -> FastAPI:
    """The FastAPI app for one loaded `Predictor` (no side effects until served)."""
    batcher = MicroBatcher(predictor, batch_size, batch_wait_ms / 1000, max_texts) if micro_batching else None

    @asynccontextmanager
    async def lifespan(app):
        if batcher is not None:
            batcher.start()
        yield
        if batcher is not None:
            await batcher.stop()

    app = FastAPI(title="xdistil NER", summary="named entities from an exported xdistil model", lifespan=lifespan)
    limiter = anyio.CapacityLimiter(max_concurrency)
    info = Health(status="ok", model=predictor.path.name, kind=predictor.kind, precision=predictor.precision,
                  labels=predictor.labels, micro_batching=micro_batching,
                  limits={"max_body_bytes": max_body_bytes, "max_texts": max_texts, "max_chars": max_chars})

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return info

    @app.post("/predict", response_model=PredictResponse, responses=ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": REQUEST_SCHEMA}}}})
    async def predict(request: Request) -> JSONResponse:
        body = await _read_body(request, max_body_bytes)
        texts = parse_texts(body, max_texts, max_chars)
        try:
            if batcher is not None and batcher.running:
                results = await batcher.annotate(texts)
            else:
                results = await anyio.to_thread.run_sync(predictor.annotate, texts, batch_size, limiter=limiter)
        except ValueError as e:  # a text the tokenizer refuses (checked above; kept as a last guard)
            raise HTTPException(422, str(e)) from None
        # Already plain JSON types: returned as is, the response model only documents them.
        return JSONResponse({"results": results, "entities": [r["entities"] for r in results]})

    return app


def parse_texts(body: bytes, max_texts: int, max_chars: int) -> list[str]:
    """The texts of a request body, or an `HTTPException` (400 / 413 / 422) that names the problem."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError, and ints over Python's digit limit
        raise HTTPException(400, f"malformed JSON: {e}") from None
    except RecursionError:
        raise HTTPException(400, "malformed JSON: nested too deeply") from None
    if isinstance(data, dict) and "inputs" in data:
        texts = [data["inputs"]] if isinstance(data["inputs"], str) else data["inputs"]
    else:
        texts = data.get("texts") if isinstance(data, dict) else data
    if not isinstance(texts, list):
        raise HTTPException(422, 'expected a JSON list of texts, {"texts": [...]} or {"inputs": text | [...]}')
    if len(texts) > max_texts:
        raise HTTPException(413, f"{len(texts)} texts in one request; the limit is {max_texts}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise HTTPException(422, f"item {i} is {type(t).__name__}, not a string")
        if len(t) > max_chars:
            raise HTTPException(413, f"text {i} has {len(t)} characters; the limit is {max_chars}")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            raise HTTPException(422, f"text {i} is not valid Unicode ({e.reason} at {e.start})") from None
    return texts


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, f"bad Content-Length {declared!r}")
        if int(declared) > limit:
            raise HTTPException(413, f"body of {declared} bytes; the limit is {limit}")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HTTPException(413, f"body over {limit} bytes")
    except ClientDisconnect:  # the client left (or was timed out) mid-body: nobody to answer
        raise HTTPException(400, "client disconnected before sending the whole body") from None
    return bytes(body)


class MicroBatcher:
    """One worker task that runs queued requests together (module doc).

    If a batch fails, its requests are rerun one by one, so one bad request cannot fail
    the others that happened to share its batch.
    """

    def __init__(self, predictor: Predictor, batch_size: int, wait_s: float, max_texts: int):
        self.predictor, self.batch_size, self.wait_s, self.max_texts = predictor, batch_size, wait_s, max_texts
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        while self.queue is not None and not self.queue.empty():
            _, fut = self.queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("server shutting down"))

    async def annotate(self, texts: list[str]) -> list[dict]:
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, fut))
        return await fut

    def _drain(self, batch: list, n: int) -> int:
        while n < self.max_texts and not self.queue.empty():
            item = self.queue.get_nowait()
            batch.append(item)
            n += len(item[0])
        return n

    async def _work(self) -> None:
        while True:
            batch = [await self.queue.get()]
            n = self._drain(batch, len(batch[0][0]))
            if self.wait_s > 0 and n < self.max_texts:
                await asyncio.sleep(self.wait_s)
                self._drain(batch, n)
            batch = [(texts, fut) for texts, fut in batch if not fut.done()]  # clients that gave up
            texts = [t for ts, _ in batch for t in ts]
            try:
                results = await anyio.to_thread.run_sync(self.predictor.annotate, texts, self.batch_size)
            except Exception:
                for ts, fut in batch:
                    await self._run_alone(ts, fut)
                continue
            pos = 0
            for ts, fut in batch:
                if not fut.done():
                    fut.set_result(results[pos : pos + len(ts)])
                pos += len(ts)

    async def _run_alone(self, texts: list[str], fut: asyncio.Future) -> None:
        try:
            result = await anyio.to_thread.run_sync(self.predictor.annotate, texts, self.batch_size)
        except Exception as e:
            if not fut.done():
                fut.set_exception(e)
            return
        if not fut.done():
            fut.set_result(result)


# ---- the server ----------------------------------------------------------------------


class _DeadlineH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline for receiving each whole request.

    uvicorn times out idle keep-alive connections only after a response; a client that
    connects and sends nothing, or half a request, would hold its connection forever.
    Here the clock starts at connect and after every response: if the request (headers
    and body) is not in by ``request_timeout`` seconds, the connection is closed. A
    request already received is never cut while the model works on it.
    """

    request_timeout = 5.0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._deadline = None
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.request_timeout, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        c = self.cycle
        receiving = c is None or c.response_complete or c.more_body
        if receiving and not self.transport.is_closing():
            self.transport.close()


def server_config(app: FastAPI, host: str = "127.0.0.1", port: int = 8080, request_timeout: float = 5.0,
                  log_level: str = "info") -> uvicorn.Config:
    """uvicorn settings for `create_app`: request deadline, short keep-alive, bounded header size."""
    protocol = type("DeadlineH11", (_DeadlineH11,), {"request_timeout": float(request_timeout)})
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=protocol,
                          timeout_keep_alive=max(1, min(5, int(request_timeout))),
                          h11_max_incomplete_event_size=16 * 1024)  # request line + headers


def serve(
    path: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8080,
    precision: str = "fp32",
    threads: int | None = None,
    log_level: str = "info",
    request_timeout: float = 5.0,
    **limits,
) -> None:
    """Load the export at ``path`` and serve it until interrupted (``limits``: see `create_app`)."""
    app = create_app(Predictor(path, precision=precision, threads=threads), **limits)
    try:
        uvicorn.Server(server_config(app, host, port, request_timeout, log_level)).run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it handled; the shutdown was clean (as uvicorn.run)
        pass
