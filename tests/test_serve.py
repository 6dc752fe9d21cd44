"""The HTTP service on loopback: real requests, the HF inputs form, limits, bad bodies, slow clients, micro-batching, clean shutdown."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
import torch
import uvicorn
from tiny import import_blocker, make_tiny_teacher, tiny_words
from xdistil_export.runtime import Predictor
from xdistil_export.serve import create_app, server_config

from xdistil.deployable import export_model

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


REQUEST_TIMEOUT = 1.0  # seconds a client has to send a request (short, so the slow-client tests are quick)


@contextmanager
def _running(app):
    """uvicorn in a background thread on a socket bound here (port 0: no race for a free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(server_config(app, request_timeout=REQUEST_TIMEOUT, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    _wait_healthy(url)
    try:
        yield url
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert not thread.is_alive(), "server did not shut down"


@pytest.fixture(scope="module")
def server(predictor):
    with _running(create_app(predictor, batch_size=8, **LIMITS)) as url:
        yield url


@pytest.fixture(scope="module")
def unbatched_server(predictor):
    with _running(create_app(predictor, batch_size=8, micro_batching=False, **LIMITS)) as url:
        yield url


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
    assert body["limits"] == LIMITS and body["micro_batching"] is True
    assert body["model"] == predictor.path.name and str(predictor.path.parent) not in r.text  # no absolute path


def test_predict_matches_the_predictor(server, predictor):
    texts = _texts(5, 1) + ["", "  "]
    r = httpx.post(server + "/predict", json=texts)
    assert r.status_code == 200
    # the records `predict` writes (words, tags, scores, entities), and the entities alone
    assert r.json() == {"results": predictor.annotate(texts), "entities": predictor.predict(texts)}
    assert httpx.post(server + "/predict", json={"texts": texts[:2]}).json()["entities"] == predictor.predict(texts[:2])
    assert httpx.post(server + "/predict", json=[]).json() == {"results": [], "entities": []}


def test_hf_inputs_form(server, predictor):
    texts = _texts(3, 2)
    one = httpx.post(server + "/predict", json={"inputs": texts[0]})
    assert one.status_code == 200 and one.json()["results"] == predictor.annotate(texts[:1])
    many = httpx.post(server + "/predict", json={"inputs": texts}).json()
    assert many["entities"] == predictor.predict(texts)
    assert httpx.post(server + "/predict", json={"inputs": 3}).status_code == 422


def test_openapi_documents_request_and_response(server):
    spec = httpx.get(server + "/openapi.json").json()
    op = spec["paths"]["/predict"]["post"]
    shapes = op["requestBody"]["content"]["application/json"]["schema"]["anyOf"]
    assert {"texts", "inputs"} <= {k for s in shapes for k in s.get("properties", {})}
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("PredictResponse")
    entity = spec["components"]["schemas"]["EntityOut"]["properties"]
    assert {"entity_group", "score", "word", "start", "end", "start_word", "end_word"} <= set(entity)
    assert {"400", "413", "422"} <= set(op["responses"])


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
        # what the JSON parser or the tokenizer chokes on is the client's mistake, never a 500
        (b"[" * 9000 + b"]" * 9000, 400, "nested too deeply"),
        (b"[" + b"9" * 5000 + b"]", 400, "malformed JSON"),
        (b'["\\ud800 x"]', 422, "not valid Unicode"),
        (b'{"inputs": ["ok", "\\udfff"]}', 422, "text 1 is not valid Unicode"),
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


@pytest.mark.parametrize("batched", [True, False])
def test_concurrent_burst(server, unbatched_server, predictor, batched):
    """200 requests from 16 threads; every answer equals the predictor's own output for its texts."""
    requests = [_texts(1 + i % 4, seed=100 + i) for i in range(200)]
    expected = [predictor.predict(t) for t in requests]
    with httpx.Client(base_url=server if batched else unbatched_server, timeout=30) as client:

        def send(i):
            r = client.post("/predict", json=requests[i])
            return r.status_code, r.json()

        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(send, range(200)))
    assert [s for s, _ in results] == [200] * 200
    assert [body["entities"] for _, body in results] == expected


def test_cli_serve_without_torch_and_clean_shutdown(export_dir, predictor):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = import_blocker("torch", "transformers", why="serving must not import it") + textwrap.dedent(f"""
        import sys
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


class _Counting:
    """A `Predictor` stand-in that counts `annotate` calls and fails on one magic text."""

    def __init__(self, predictor):
        self.inner, self.calls, self.lock = predictor, [], threading.Lock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def annotate(self, texts, batch_size=32):
        with self.lock:
            self.calls.append(len(texts))
        if "boom" in texts:
            raise RuntimeError("boom")
        time.sleep(0.02)  # a slower model, so that requests pile up while one batch runs
        return self.inner.annotate(texts, batch_size)


def test_micro_batching_groups_concurrent_requests_and_isolates_failures(predictor):
    counting = _Counting(predictor)
    requests = [_texts(1 + i % 3, seed=200 + i) for i in range(32)]
    expected = [predictor.predict(t) for t in requests]
    # a client a burst: the server drops connections idle for its 1 s keep-alive, and a
    # pooled connection reused just as it is dropped is reset (a client-side race, not a bug)
    with _running(create_app(counting, batch_size=8, batch_wait_ms=5, **LIMITS)) as url, \
            ThreadPoolExecutor(max_workers=16) as pool:
        with httpx.Client(base_url=url, timeout=30) as client:
            results = list(pool.map(lambda t: client.post("/predict", json=t).json()["entities"], requests))
        assert results == expected
        assert sum(counting.calls) == sum(len(t) for t in requests)
        assert len(counting.calls) < len(requests) / 2  # requests shared batches
        # a request that makes the model fail gets its 500 alone; its batch mates are answered
        counting.calls.clear()
        sent = [["boom"]] + requests[:7]
        with httpx.Client(base_url=url, timeout=30) as client:
            codes = list(pool.map(lambda t: client.post("/predict", json=t).status_code, sent))
    assert codes == [500] + [200] * 7


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (reads until EOF)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


@pytest.mark.parametrize("sent", [b"", b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Le",
                                  b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[\"half"])
def test_idle_and_half_sent_connections_are_closed_within_seconds(server, sent):
    port = int(server.rsplit(":", 1)[1])
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(sent)
        assert _closed_within(sock, REQUEST_TIMEOUT + 4)
    assert time.monotonic() - t0 < REQUEST_TIMEOUT + 4
    assert httpx.get(server + "/health").status_code == 200  # still serving


def test_a_slow_model_is_not_cut_by_the_request_deadline(predictor):
    class Slow(_Counting):
        def annotate(self, texts, batch_size=32):
            time.sleep(REQUEST_TIMEOUT + 0.5)
            return self.inner.annotate(texts, batch_size)

    with _running(create_app(Slow(predictor), **LIMITS)) as url:
        assert httpx.post(url + "/predict", json=["a b"], timeout=10).status_code == 200


def test_an_export_whose_labels_disagree_with_its_graph_fails_at_start_up(export_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(export_dir, broken)
    manifest = json.loads((broken / "export_manifest.json").read_text())
    manifest["labels"] = manifest["labels"][:-2]
    (broken / "export_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="labels"):
        Predictor(broken)
    proc = subprocess.run([sys.executable, "-m", "xdistil_export.cli", "serve", str(broken), "--port", "1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("xdistil-runtime: error: ") and "Traceback" not in proc.stderr


def test_predictor_refuses_lone_surrogates_with_a_clear_error(predictor):
    with pytest.raises(ValueError, match="item 1: not valid Unicode"):
        predictor.annotate(["fine", "bad \ud800 text"])


def test_serve_benchmark_runs_briefly(export_dir):
    from benchmarks import serve as bench

    result = bench.run(str(export_dir), bench.SENTENCES, seconds=0.4, clients=(1, 4), threads=1, warmup=0.2)
    cells = {(c["micro_batching"], c["clients"]): c for c in result["cells"]}
    assert set(cells) == {(True, 1), (True, 4), (False, 1), (False, 4)}
    assert all(c["requests"] > 0 and 0 < c["p50_ms"] <= c["p95_ms"] <= c["max_ms"] for c in cells.values())
    assert "| on | 4 |" in bench.markdown(result)
