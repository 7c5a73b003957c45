"""The endpoint client's throughput against a bare HTTP loop, on one local server (``medfool serve``, KServe).

    python -m benchmarks.endpoint_client                    # ~3 min on 2 quiet cores: 64 and 224 px tiles, batches of 8
    python -m benchmarks.endpoint_client --size 224 --batch 8 --requests 20

Both sides send the same JSON body (the Open Inference Protocol's ``infer`` with FP32 data) to the same server on
127.0.0.1, in the same process, alternating in rounds so that drift in the machine's load hits both: (1) medfool's
``EndpointClient.infer`` (rate limit off, concurrency 1: its retry, logging and checks included) and (2) an
``httpx.Client`` loop that posts and parses the answer and does nothing else. The figure is images per second and
the ratio client / bare loop (the issue's goal: at least 0.9). Not part of the tests (no timing is asserted).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(port: int) -> subprocess.Popen[bytes]:
    code = "import sys; from medfool_ref.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    from medfool_ref.targets.endpoint import ClientOptions, EndpointClient, EndpointError

    deadline = time.monotonic() + 120
    while True:
        try:
            EndpointClient(url, ClientOptions(retries=0)).ready()
            return
        except EndpointError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("medfool serve did not become ready") from None
            time.sleep(1)


def run(size: int, batch: int, requests: int, rounds: int) -> dict[str, Any]:
    import httpx

    from medfool_ref.targets.endpoint import ClientOptions, EndpointClient

    port = _free_port()
    url = f"http://127.0.0.1:{port}/v2/models/tilenet"
    proc = _serve(port)
    try:
        _wait_ready(url, proc)
        x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
        client = EndpointClient(url, ClientOptions(rate_limit=0, concurrency=1, max_batch=batch))
        name = client.metadata()["inputs"][0]["name"]
        bare = httpx.Client(headers={"Content-Type": "application/json"}, timeout=60)

        def ours() -> None:
            for _ in range(requests):
                client.infer(x, name)

        def theirs() -> None:
            for _ in range(requests):
                body = json.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                                               "data": x.reshape(-1).tolist()}]}).encode()
                doc = bare.post(f"{url}/infer", content=body).json()
                np.asarray(doc["outputs"][0]["data"], dtype=np.float64)

        ours(), theirs()  # warm-up: connections, the server's first passes
        times: dict[str, list[float]] = {"medfool": [], "httpx": []}
        for _ in range(rounds):
            for key, fn in (("medfool", ours), ("httpx", theirs)):
                t = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t)
        bare.close()
        client.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    images = batch * requests
    per_s = {k: images / statistics.median(v) for k, v in times.items()}
    return {"tile_px": size, "batch": batch, "requests_per_round": requests, "rounds": rounds,
            "images_per_s": {k: round(v, 1) for k, v in per_s.items()},
            "ratio_medfool_over_httpx": round(per_s["medfool"] / per_s["httpx"], 3),
            "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()}}


def main(argv: list[str] | None = None) -> int:
    import torch

    from .output import machine_line, write_result

    ap = argparse.ArgumentParser(prog="python -m benchmarks.endpoint_client", description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, action="append", help="tile side in px (default 64 and 224)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--requests", type=int, default=5, help="requests per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "endpoint-client-cpu.json"))
    args = ap.parse_args(argv)
    rows = [run(s, args.batch, args.requests, args.rounds) for s in args.size or [64, 224]]
    result = {"date": dt.date.today().isoformat(), "machine": machine_line(torch.device("cpu")), "server": "medfool serve (KServe ModelServer), 127.0.0.1",
              "rows": rows, "command": "python -m benchmarks.endpoint_client " + " ".join(argv if argv is not None else sys.argv[1:])}
    md = ["# The endpoint client against a bare httpx loop", "", f"{result['date']}, {result['machine']}; {result['server']}.", "",
          "| tile px | batch | medfool client (images/s) | bare httpx loop (images/s) | client / loop |", "|---|---|---|---|---|"]
    md += [f"| {r['tile_px']} | {r['batch']} | {r['images_per_s']['medfool']} | {r['images_per_s']['httpx']} | {r['ratio_medfool_over_httpx']:.2f} |"
           for r in rows]
    write_result(args.out, result, "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
