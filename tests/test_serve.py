"""The HTTP service on loopback: real requests, limits, a concurrent burst, clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
import uvicorn
from tiny import make_tiny_teacher, tiny_words
from xdistil_export.onnx_export import export_model
from xdistil_export.runtime import Predictor
from xdistil_export.serve import create_app

LIMITS = {"max_body_bytes": 20_000, "max_texts": 16, "max_chars": 600}


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; a busy 2-core machine makes thread pools crawl
    root = tmp_path_factory.mktemp("serve")
    out = root / "teacher-onnx"
    export_model(make_tiny_teacher(root), out)
    torch.set_num_threads(before)
    return out


@pytest.fixture(scope="module")
def predictor(export_dir):
    return Predictor(export_dir, threads=1)


@pytest.fixture(scope="module")
def server(predictor):
    """uvicorn in a background thread on a socket bound here (port 0: no race for a free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(predictor, batch_size=8, **LIMITS), log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    _wait_healthy(url)
    yield url
    srv.should_exit = True
    thread.join(timeout=10)
    assert not thread.is_alive(), "server did not shut down"
    sock.close()


def _wait_healthy(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.communicate()[1]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


def _texts(n: int, seed: int) -> list[str]:
    words = tiny_words(20 * n, seed=seed)
    return [" ".join(words[i * 20 : i * 20 + 3 + (i * 7) % 17]) + "." for i in range(n)]


def test_health(server, predictor):
    r = httpx.get(server + "/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["labels"] == predictor.labels and body["precision"] == "fp32"
    assert body["limits"] == LIMITS


def test_predict_matches_the_predictor(server, predictor):
    texts = _texts(5, 1) + ["", "  "]
    r = httpx.post(server + "/predict", json=texts)
    assert r.status_code == 200
    assert r.json() == {"entities": predictor.predict(texts)}
    assert httpx.post(server + "/predict", json={"texts": texts[:2]}).json()["entities"] == predictor.predict(texts[:2])
    assert httpx.post(server + "/predict", json=[]).json() == {"entities": []}


@pytest.mark.parametrize(
    ("content", "status", "detail"),
    [
        (b'["unterminated', 400, "malformed JSON"),
        (b"\xff\xfe not utf-8", 400, "malformed JSON"),
        (b'["fine", 3]', 422, "item 1 is int"),
        (b'["fine", null]', 422, "item 1 is NoneType"),
        (b'{"text": "no list"}', 422, "expected a JSON list"),
        (b'"just a string"', 422, "expected a JSON list"),
        (json.dumps(["x"] * 17).encode(), 413, "17 texts"),
        (json.dumps(["x" * 601]).encode(), 413, "601 characters"),
        (json.dumps(["word " * 1000] * 5).encode(), 413, "limit is 20000"),
    ],
)
def test_bad_requests_get_a_clear_4xx(server, content, status, detail):
    r = httpx.post(server + "/predict", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert detail in r.json()["detail"]


def test_oversize_streamed_body_without_content_length_is_refused(server):
    def chunks():  # chunked transfer encoding: no Content-Length to check, bytes are counted
        yield b'["'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"]'

    r = httpx.post(server + "/predict", content=chunks())
    assert r.status_code == 413 and "over 20000 bytes" in r.json()["detail"]
    assert httpx.get(server + "/health").status_code == 200  # still serving


def test_wrong_method_and_path(server):
    assert httpx.get(server + "/predict").status_code == 405
    assert httpx.post(server + "/nope", json=[]).status_code == 404


def test_concurrent_burst(server, predictor):
    """50 requests from 8 threads; every answer equals the predictor's own output for its texts."""
    requests = [_texts(1 + i % 4, seed=100 + i) for i in range(50)]
    expected = [predictor.predict(t) for t in requests]
    with httpx.Client(base_url=server, timeout=30) as client:

        def send(i):
            r = client.post("/predict", json=requests[i])
            return r.status_code, r.json()

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(send, range(50)))
    assert [s for s, _ in results] == [200] * 50
    assert [body["entities"] for _, body in results] == expected


def test_cli_serve_without_torch_and_clean_shutdown(export_dir, predictor):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = textwrap.dedent(f"""
        import sys

        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers"):
                    raise ImportError(f"{{name}} is blocked: serving must not import it")
                return None

        sys.meta_path.insert(0, BlockTorch())
        from xdistil.cli import main
        sys.exit(main(["serve", {str(export_dir)!r}, "--port", "{port}", "--threads", "1"]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=""))
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc=proc)
        texts = _texts(3, 7)
        assert httpx.post(url + "/predict", json=texts).json()["entities"] == predictor.predict(texts)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "Shutting down" in err or "Finished server process" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
