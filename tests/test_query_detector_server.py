"""`medfool serve --detector` on 127.0.0.1 (KServe ModelServer, started by the test on a free port, always stopped):
a Square run through the endpoint is refused with HTTP 403 once its stream is flagged, and the client's error names
the endpoint and says why; another client (another bearer token) is still answered; a bad --detector-fpr is one
clear line, exit 2."""

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
def server(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "stderr.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", "import sys; from medfool_ref.cli import main; sys.exit(main(sys.argv[1:]))",
                                 "serve", "--port", str(port), "--detector"], env=env, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}/v2/models/tilenet"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                EndpointClient(url, ClientOptions(retries=0)).ready()
                break
            except EndpointError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("medfool serve --detector did not become ready: " + log.read_text()[-2000:])
                time.sleep(1)
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_square_through_a_detecting_server_is_refused(server, monkeypatch) -> None:
    url, log = server
    model = load_model(device="cpu").eval()
    tiles = sample_tiles()[:12]
    x = torch.stack([F.interpolate(read_tile(t.path)[None], size=(32, 32), mode="area")[0] for t in tiles])
    y = torch.tensor([t.index for t in tiles])
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    x, y = x[ok][:2], y[ok][:2]
    monkeypatch.setenv("MEDFOOL_ATTACKER_TOKEN", "attacker-token")
    monkeypatch.setenv("MEDFOOL_OTHER_TOKEN", "other-token")
    attacker = endpoint_target(url, model.classes, options=ClientOptions(token_env="MEDFOOL_ATTACKER_TOKEN", rate_limit=0))
    with pytest.raises(EndpointError) as caught:
        square(attacker.model, x, y, eps=2 / 255, max_queries=200, seed=0)
    message = str(caught.value)
    assert message.startswith(url) and "HTTP 403 (refused)" in message and "flagged" in message, message
    sent = attacker.model.client.sent
    print("\n" + message, sent)
    assert 4 + 2 * 2 <= sent <= 4 + 2 * 10, sent  # probes, then a few query batches of two tiles before the refusal
    with pytest.raises(EndpointError, match="403"):  # the flagged client stays refused, even for a distinct tile
        attacker.model(x[:1].flip(-1))
    other = endpoint_target(url, model.classes, options=ClientOptions(token_env="MEDFOOL_OTHER_TOKEN", rate_limit=0))
    assert other.model(x).argmax(1).tolist() == y.tolist()  # other clients are still answered
    text = log.read_text()
    assert "flagged at query" in text and "attacker-token" not in text


def test_a_bad_detector_fpr_is_one_clear_line(capsys) -> None:
    from medfool_ref.cli import main

    assert main(["serve", "--detector", "--detector-fpr", "1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--detector-fpr 1.5" in err and "\n" not in err and "Traceback" not in err
