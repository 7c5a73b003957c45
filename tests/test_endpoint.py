"""The endpoint target against a real local server: `medfool serve` (KServe ModelServer) on 127.0.0.1, started by
the test on a free port and always stopped. The same attack with the same seed gives the same per-tile result
in-process and through the server; the bearer token never reaches a file; bad answers name the endpoint."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("kserve")

from medfool_ref.attacks.square import square  # noqa: E402
from medfool_ref.inputs.samples import sample_tiles  # noqa: E402
from medfool_ref.inputs.tiles import read_tile  # noqa: E402
from medfool_ref.targets.endpoint import ClientOptions, EndpointClient, EndpointError, endpoint_target  # noqa: E402
from medfool_ref.targets.reference import load_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from medfool_ref.cli import main; sys.exit(main(sys.argv[1:]))", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v2/models/tilenet"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                EndpointClient(url, ClientOptions(retries=0)).ready()
                break
            except EndpointError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("medfool serve did not become ready")
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def tiles():
    model = load_model(device="cpu").eval()
    ts = sample_tiles()
    x = torch.stack([F.interpolate(read_tile(t.path)[None], size=(32, 32), mode="area")[0] for t in ts])
    y = torch.tensor([t.index for t in ts])
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    return model, x[ok][:4], y[ok][:4]


def test_square_through_the_server_matches_in_process(server, tiles, tmp_path, monkeypatch) -> None:
    model, x, y = tiles
    monkeypatch.setenv("MEDFOOL_TEST_TOKEN", "s3cret-token-value")
    records = []
    target = endpoint_target(server, model.classes, options=ClientOptions(token_env="MEDFOOL_TEST_TOKEN", rate_limit=0),
                             on_record=records.append)
    local = square(model, x, y, eps=4 / 255, max_queries=40, seed=3)
    remote = square(target.model, x, y, eps=4 / 255, max_queries=40, seed=3)
    assert torch.equal(local.success, remote.success)
    assert torch.equal(local.extra["queries"], remote.extra["queries"])
    assert torch.allclose(local.adversarial, remote.adversarial, atol=1e-6)
    sent = sum(r.images for r in records if r.images)
    assert sent == int(remote.extra["queries"].sum()) + len(y) + 4  # attack queries, final scoring, probe tiles
    assert all(r.status == 200 for r in records)
    again = endpoint_target(server, model.classes, options=ClientOptions(rate_limit=0))
    assert again.fingerprint == target.fingerprint  # the same model behind the URL
    label = endpoint_target(server, model.classes, output="label", options=ClientOptions(rate_limit=0))
    assert label.fingerprint != target.fingerprint
    (tmp_path / "log.txt").write_text(repr(records) + repr(target.model.client.records))
    for f in tmp_path.rglob("*"):
        assert b"s3cret" not in f.read_bytes()


def test_a_bad_url_or_unset_token_is_a_clear_error(server) -> None:
    with pytest.raises(EndpointError, match="v2/models/NAME"):
        EndpointClient("http://127.0.0.1:1/predict")
    with pytest.raises(EndpointError, match="NO_SUCH_TOKEN_VAR"):
        EndpointClient(server, ClientOptions(token_env="NO_SUCH_TOKEN_VAR"))
    with pytest.raises(EndpointError, match="127.0.0.1.*(404|HTTP)"):
        endpoint_target(server.replace("tilenet", "nosuchmodel"), ("a", "b"), options=ClientOptions(retries=0))


def test_audit_of_a_served_model_runs_the_query_only_battery(server, tmp_path, capsys) -> None:
    """`medfool audit --endpoint`: the query-only battery through the server, a report written, the white-box
    validity checks stated as not run (no gradients), and a --defence beside --endpoint refused before any query."""
    import json

    from medfool_ref.cli import main

    out = tmp_path / "audit"
    argv = ["audit", "--endpoint", server, "--data", "sample", "--max-tiles", "3", "--out", str(out), "--rate-limit", "0",
            "--attacks", "square,hop-skip-jump", "--set", "square.max_queries=40", "--set", "hop-skip-jump.max_queries=40"]
    assert main(argv) == 0, capsys.readouterr().err
    doc = json.loads((out / "report.json").read_text())
    ran = {a["id"] for a in doc["attacks"]}
    assert {"square", "hop-skip-jump"} <= ran, ran
    assert [c["id"] for c in doc["validity"]] == ["query-only"] and doc["validity"][0]["passed"] is None
    assert doc["unreliable"] is False
    # every request is logged in the store, and the images add up: the probe tiles, every image a unit's attack sent
    # (its query count), and the executor's two scoring passes (float and 8-bit) of each attacked tile
    import sqlite3

    from medfool_ref.targets.endpoint import PROBES

    db = sqlite3.connect(out / "results.sqlite")
    logged = db.execute("SELECT COUNT(*), SUM(images), MIN(bytes_sent * (images > 0) + (images = 0)), MIN(seconds) "
                        "FROM queries WHERE status = '200'").fetchone()  # every infer request carries its body's bytes
    forwarded, attacked = db.execute("SELECT SUM(forward_images), SUM(CASE WHEN attack != 'predict' THEN n_items ELSE 0 END) "
                                     "FROM units").fetchone()
    db.close()
    q = doc["queries"]
    assert q["statuses"] == {"200": q["requests"]} and q["answered"] == logged[0] == q["requests"] and q["runs"] == 1
    assert q["images_answered"] == logged[1] == PROBES + forwarded + 2 * attacked, (q, forwarded, attacked)
    assert logged[2] > 0 and logged[3] > 0 and q["latency_median_s"] <= q["latency_p95_s"]
    assert "Requests sent to the endpoint" in (out / "report.html").read_text()
    assert f"{q['requests']} requests" in capsys.readouterr().out
    assert main(argv + ["--resume"]) == 0  # a resumed run re-sends nothing answered: only the probe tiles
    again = json.loads((out / "report.json").read_text())["queries"]
    assert again["runs"] == 2 and again["images_answered"] == q["images_answered"] + PROBES
    assert main(["audit", "--endpoint", server, "--data", "sample", "--out", str(tmp_path / "x"), "--defence", "jpeg"]) == 2
    assert "--defence cannot be combined with --endpoint" in capsys.readouterr().err
    assert main(["audit", "--endpoint", server, "--data", "sample", "--out", str(tmp_path / "y"), "--dry-run",
                 "--max-tiles", "2"]) == 0
    assert "nothing sent" in capsys.readouterr().out
