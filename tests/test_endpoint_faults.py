"""The endpoint client against a scripted local server (stdlib http.server on 127.0.0.1, in a thread, always shut
down): injected 503s and 429s are retried with backoff and counted, too many stop clearly, slow answers past the
timeout are retried, and malformed answers, a wrong shape or NaN scores give an error naming the endpoint."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

pytest.importorskip("httpx")

from medfool_ref.targets.endpoint import ClientOptions, EndpointClient, EndpointError  # noqa: E402


class Script:
    def __init__(self) -> None:
        self.plan: list[str] = []  # one behaviour per infer request; "ok" once the plan is used up
        self.infers = 0
        self.auth: list[str | None] = []
        self.arrivals: list[float] = []


def _server(script: Script) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _send(self, code: int, doc) -> None:
            body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(200, {"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]})

        def do_POST(self) -> None:
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.auth.append(self.headers.get("Authorization"))
            script.arrivals.append(time.monotonic())
            n = req["inputs"][0]["shape"][0]
            how = script.plan.pop(0) if script.plan else "ok"
            script.infers += 1
            if how in ("503", "429"):
                return self._send(int(how), {"error": "busy"})
            if how == "slow":
                time.sleep(0.6)
            data = [[0.5, 0.5]] * n
            if how == "nan":
                data = [[float("nan"), 1.0]] * n
                return self._send(200, json.dumps({"outputs": [{"name": "s", "shape": [n, 2], "data": data}]}).encode())
            if how == "shape":
                return self._send(200, {"outputs": [{"name": "s", "shape": [n + 1, 2], "data": [[0.5, 0.5]] * (n + 1)}]})
            if how == "malformed":
                return self._send(200, {"answer": 42})
            self._send(200, {"outputs": [{"name": "s", "shape": [n, 2], "datatype": "FP32", "data": data}]})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture()
def served():
    script = Script()
    srv = _server(script)
    try:
        yield script, f"http://127.0.0.1:{srv.server_address[1]}/v2/models/m"
    finally:
        srv.shutdown()
        srv.server_close()


def _client(url: str, **kw) -> EndpointClient:
    return EndpointClient(url, ClientOptions(**{"rate_limit": 0, "backoff": 0.01, "concurrency": 1, **kw}))


def test_busy_answers_are_retried_and_counted(served) -> None:
    script, url = served
    script.plan = ["503", "429", "503"]
    c = _client(url)
    out = c.infer(np.zeros((3, 3, 4, 4), np.float32), "x")
    assert out.shape == (3, 2) and c.retried == 3 and script.infers == 4
    assert [r.status for r in c.records] == [503, 429, 503, 200] and c.sent == 3


def test_too_many_failures_stop_clearly(served) -> None:
    script, url = served
    script.plan = ["503"] * 10
    with pytest.raises(EndpointError, match=r"127\.0\.0\.1.*gave up after 3 attempts"):
        _client(url, retries=2).infer(np.zeros((1, 3, 4, 4), np.float32), "x")


def test_a_slow_answer_past_the_timeout_is_retried(served) -> None:
    script, url = served
    script.plan = ["slow"]
    c = _client(url, timeout=0.2)
    assert c.infer(np.zeros((1, 3, 4, 4), np.float32), "x").shape == (1, 2)
    assert c.records[0].status in ("ReadTimeout", "TimeoutException") and c.retried == 1


@pytest.mark.parametrize("how,message", [("nan", "non-finite"), ("shape", "shape"), ("malformed", "malformed")])
def test_bad_answers_name_the_endpoint(served, how: str, message: str) -> None:
    script, url = served
    script.plan = [how]
    with pytest.raises(EndpointError, match=message) as err:
        _client(url).infer(np.zeros((2, 3, 4, 4), np.float32), "x")
    assert "127.0.0.1" in str(err.value)


def test_the_rate_limit_holds_on_the_server_side(served, monkeypatch) -> None:
    script, url = served
    monkeypatch.setenv("MEDFOOL_FAULT_TOKEN", "tok-123")
    c = _client(url, rate_limit=10, max_batch=1, token_env="MEDFOOL_FAULT_TOKEN")
    c.infer(np.zeros((6, 3, 4, 4), np.float32), "x")
    span = script.arrivals[-1] - script.arrivals[0]
    assert len(script.arrivals) == 6 and 5 / span <= 10 * 1.1  # at most 10 requests/s, as the server saw them (jitter aside)
    assert script.auth == ["Bearer tok-123"] * 6
    assert "tok-123" not in repr(c.records)


def test_the_total_budget_is_refused_before_sending(served) -> None:
    script, url = served
    c = _client(url, total_queries=4)
    c.infer(np.zeros((3, 3, 4, 4), np.float32), "x")
    with pytest.raises(EndpointError, match="total query budget"):
        c.infer(np.zeros((2, 3, 4, 4), np.float32), "x")
    assert script.infers == 1


def _model_server(state: dict) -> ThreadingHTTPServer:
    """The reference model behind a plain Open Inference Protocol server that 'dies' (drops every connection) once
    ``state['die_after']`` infer requests were answered, and comes back when the test clears it."""
    import torch

    from medfool_ref.targets.reference import load_model

    model = load_model(device="cpu").eval()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _send(self, doc) -> None:
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _dead(self) -> bool:
            if state["die_after"] is not None and state["answered"] >= state["die_after"]:
                self.close_connection = True
                self.connection.close()  # as a killed server: the connection drops, no answer
                return True
            return False

        def do_GET(self) -> None:
            if not self._dead():
                self._send({"name": "tilenet", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]})

        def do_POST(self) -> None:
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self._dead():
                return
            spec = req["inputs"][0]
            x = torch.tensor(spec["data"], dtype=torch.float32).view(spec["shape"])
            with torch.no_grad():
                p = model(x).softmax(1)
            state["answered"] += 1
            self._send({"outputs": [{"name": "p", "shape": list(p.shape), "datatype": "FP32", "data": p.flatten().tolist()}]})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_a_server_that_dies_mid_audit_then_resume_gives_the_same_report(tmp_path, capsys) -> None:
    """The server stops answering part-way; the audit stops with a clear error and keeps what was answered; once the
    server is back, --resume ends with the report of an uninterrupted run, and re-sends only the probe tiles and the
    unit that was in flight (the query log in results.sqlite says exactly what went out)."""
    import sqlite3

    from medfool_ref.cli import main
    from medfool_ref.targets.endpoint import PROBES

    state = {"die_after": None, "answered": 0}
    srv = _model_server(state)
    url = f"http://127.0.0.1:{srv.server_address[1]}/v2/models/tilenet"
    argv = ["audit", "--endpoint", url, "--data", "sample", "--max-tiles", "4", "--rate-limit", "0", "--batch-size", "2",
            "--attacks", "square", "--budgets", "8", "--set", "square.max_queries=15"]

    def sent(out) -> list[tuple[str, int]]:
        db = sqlite3.connect(out / "results.sqlite")
        rows = db.execute("SELECT run, SUM(images) FROM queries WHERE status = '200' GROUP BY run ORDER BY MIN(at)").fetchall()
        db.close()
        return rows

    try:
        whole = tmp_path / "whole"
        assert main(argv + ["--out", str(whole)]) == 0, capsys.readouterr().err
        reference = json.loads((whole / "report.json").read_text())
        (images_whole,) = [n for _, n in sent(whole)]
        capsys.readouterr()
        cut = tmp_path / "cut"
        state.update(die_after=state["answered"] + 5, answered=state["answered"])  # dies after 5 more answers
        assert main(argv + ["--out", str(cut)]) == 1
        err = capsys.readouterr().err
        assert "127.0.0.1" in err and "gave up" in err and "Traceback" not in err
        state["die_after"] = None  # the server is back
        assert main(argv + ["--out", str(cut), "--resume"]) == 0, capsys.readouterr().err
    finally:
        srv.shutdown()
        srv.server_close()
    resumed = json.loads((cut / "report.json").read_text())
    for key in ("data", "attacks", "worst_case", "threat_model"):
        strip = (lambda v: json.loads(json.dumps(v).replace(url, "URL")))
        assert _without(strip(resumed[key]), {"seconds", "date"}) == _without(strip(reference[key]), {"seconds", "date"}), key
    (first, n1), (second, n2) = sent(cut)
    db = sqlite3.connect(cut / "results.sqlite")
    biggest_unit = db.execute("SELECT MAX(forward_images + 2 * n_items) FROM units").fetchone()[0]
    db.close()
    assert n1 < images_whole and n2 < images_whole  # neither run sent everything
    assert images_whole + PROBES <= n1 + n2 <= images_whole + PROBES + biggest_unit  # nothing answered was sent again


def _without(v, keys: set[str]):
    if isinstance(v, dict):
        return {k: _without(x, keys) for k, x in v.items() if k not in keys}
    if isinstance(v, list):
        return [_without(x, keys) for x in v]
    return v
