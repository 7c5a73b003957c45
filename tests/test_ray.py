"""The Ray engine: the same results as the local engine, a killed worker retried, a killed driver resumed,
and a cluster joined by address. Ray runs on this machine (a local instance, or a head node the test starts)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from medfool_ref.campaign.plan import sample_items, tile_units
from medfool_ref.campaign.ray_engine import RayEngine
from medfool_ref.campaign.run import run_campaign
from medfool_ref.campaign.store import ResultsStore
from medfool_ref.targets.target import reference_target
from reportdiff import stable

EXE = Path(sys.executable).parent / "medfool"
RAY = Path(sys.executable).parent / "ray"
VOLATILE = {"date", "seconds", "engine", "provenance"}


def _stable(doc):
    return stable(doc, VOLATILE)


def _records(store: ResultsStore, keys: list[str]) -> list[dict]:
    return [{k: v for k, v in r.items()} for r in store.items(keys)]


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    import shutil

    from medfool_ref.inputs.samples import sample_tiles

    root = tmp_path_factory.mktemp("tiles")
    for t in sample_tiles():
        if t.dataset == "crc-val-he-7k-sample" and t.label in ("TUM", "NORM", "STR"):
            (root / t.label).mkdir(exist_ok=True)
            shutil.copy(t.path, root / t.label / t.path.name)
    return root


@pytest.fixture
def ray_engine():
    """A local Ray instance for one test, shut down after it (a driver dies with its instance, so none outlives a test)."""
    engine = RayEngine(num_cpus=2)
    yield engine
    engine.shutdown()


def _kill_session(leader: int) -> None:
    """SIGKILL every process of the session ``leader`` started (a driver and the Ray instance it brought up)."""
    try:
        os.killpg(leader, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _in_session(leader):
        time.sleep(0.2)
    assert not _in_session(leader), "processes of the killed session are left"


def _in_session(sid: int) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.getsid(int(pid)) == sid and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
                    out.append(int(pid))
            except (OSError, IndexError):
                continue
    return out


def test_an_audit_on_ray_gives_the_local_report(tiles: Path, tmp_path: Path) -> None:
    # a small audit (the engines' agreement does not depend on its size): 8 tiles, the validity checks on 2
    args = ["audit", "--data", str(tiles), "--attacks", "fgsm,pgd,apgd-ce,apgd-t", "--budgets", "2,8", "--batch-size", "4",
            "--set", "apgd-ce.steps=5", "--set", "apgd-t.steps=5", "--max-tiles", "8", "--validity-tiles", "2"]
    local = subprocess.run([str(EXE), *args, "--out", str(tmp_path / "local")], capture_output=True, text=True)
    on_ray = subprocess.run([str(EXE), *args, "--out", str(tmp_path / "ray"), "--engine", "ray"], capture_output=True, text=True)
    assert local.returncode == 0 and on_ray.returncode == 0, local.stderr + on_ray.stderr
    a = json.loads((tmp_path / "local" / "report.json").read_text())
    b = json.loads((tmp_path / "ray" / "report.json").read_text())
    assert a["engine"] == "local" and b["engine"] == "ray"
    assert _stable(a) == _stable(b)


def _unit_workers() -> list[int]:
    """pids of Ray worker processes now running a unit (Ray titles them after the task)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"ray::_run_unit"):
                out.append(int(pid))
    return out


def test_a_worker_killed_mid_unit_is_retried_and_nothing_changes(ray_engine, tmp_path: Path) -> None:
    target = reference_target(device="cpu")
    units = tile_units("pgd", sample_items()[:8], params={"steps": 20, "early_stop": False}, batch_size=2)
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for pid in _unit_workers():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    store = ResultsStore(tmp_path / "ray")
    run = run_campaign(units, target, store, engine=ray_engine, progress=False)
    thread.join(timeout=5)
    assert killed, "no worker was seen running a unit"
    assert not run.failures and run.ran == len(units) == 4
    assert len(store.units()) == 4 and len(store.units(status="failed")) == 0  # every unit exactly once
    local = ResultsStore(tmp_path / "local")
    run_campaign(units, target, local, progress=False)
    assert _records(store, run.keys) == _records(local, run.keys)


def test_a_failing_unit_is_reported_and_the_others_complete(ray_engine, tmp_path: Path) -> None:
    target = reference_target(device="cpu")
    good = tile_units("fgsm", sample_items()[:4], batch_size=2)
    bad = tile_units("fgsm", sample_items()[4:6], params={"eps": 2.0})
    run = run_campaign(good + bad, target, ResultsStore(tmp_path), engine=ray_engine, progress=False)
    assert run.ran == 2 and len(run.failures) == 1 and "eps must be <= 1.0" in run.failures[0].error


def test_a_killed_driver_resumes_on_either_engine(tiles: Path, tmp_path: Path) -> None:
    args = ["audit", "--data", str(tiles), "--attacks", "fgsm,pgd,apgd-ce", "--budgets", "2,8", "--batch-size", "2",
            "--set", "apgd-ce.steps=10", "--max-tiles", "8", "--validity-tiles", "2"]
    out = tmp_path / "killed"
    child = subprocess.Popen([str(EXE), *args, "--out", str(out), "--engine", "ray"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and child.poll() is None:
            if (out / "results.sqlite").is_file() and len(ResultsStore(out).done_keys()) >= 10:
                break
            time.sleep(0.1)
        assert child.poll() is None, child.stderr.read().decode()
    finally:
        _kill_session(child.pid)  # the driver and the local Ray instance it started
        child.wait()
    assert not (out / "report.json").exists()
    resumed = subprocess.run([str(EXE), *args, "--out", str(out), "--resume"], capture_output=True, text=True)  # on the local engine
    whole = subprocess.run([str(EXE), *args, "--out", str(tmp_path / "whole")], capture_output=True, text=True)
    assert resumed.returncode == 0 and whole.returncode == 0, resumed.stderr + whole.stderr
    assert _stable(json.loads((out / "report.json").read_text())) == _stable(json.loads((tmp_path / "whole" / "report.json").read_text()))


def test_joining_a_cluster_by_address(tiles: Path, tmp_path: Path) -> None:
    """A head node started by the test on 127.0.0.1 (in a session of its own, so stopping it touches nothing else)."""
    port = 6391
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen([str(RAY), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus",
                             "2", "--include-dashboard", "false", "--disable-usage-stats"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        ready = False
        while time.monotonic() < deadline and head.poll() is None and not ready:
            probe = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{port}'); ray.shutdown()"],
                                   capture_output=True, env=env)
            ready = probe.returncode == 0
        assert ready, "the head node did not come up"
        run = subprocess.run([str(EXE), "audit", "--data", str(tiles), "--attacks", "fgsm", "--budgets", "8", "--out", str(tmp_path),
                              "--engine", "ray", "--ray-address", f"127.0.0.1:{port}"], capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stderr
        doc = json.loads((tmp_path / "report.json").read_text())
        assert doc["engine"] == "ray" and doc["attacks"][0]["budgets"][0]["tiles_attacked"] > 0
    finally:
        _kill_session(head.pid)
        head.wait()


def test_an_address_without_the_ray_engine_is_refused(tiles: Path, tmp_path: Path, capsys) -> None:
    from medfool_ref.cli import main

    assert main(["audit", "--data", str(tiles), "--out", str(tmp_path), "--ray-address", "127.0.0.1:1"]) == 2
    assert "--ray-address needs --engine ray" in capsys.readouterr().err


def test_without_ray_the_engine_says_how_to_install_it(tiles: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from medfool_ref.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    assert main(["audit", "--data", str(tiles), "--out", str(tmp_path), "--engine", "ray"]) == 2
    assert "pip install 'medfool[ray]'" in capsys.readouterr().err
    assert not tmp_path.joinpath("results.sqlite").exists()
