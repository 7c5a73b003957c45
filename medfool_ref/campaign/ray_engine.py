"""The Ray engine: units as Ray tasks on a local instance or an existing cluster, behind the same interface.

- The target goes into the object store once (a :class:`TargetSpec`: weights as bytes and how to
  rebuild the model); each worker process builds it once and keeps it for the units it runs.
- Units carry paths, not pixels: workers read the tiles themselves (the paths must be visible to them).
- A task asks for one GPU when the target runs on CUDA, else one CPU. A worker process that dies
  mid-unit is retried by Ray (``max_retries``); an exception inside a unit is not retried (it would
  fail again) but comes back as the unit's failure, and the other units complete.
- Outcomes come back to the driver as tasks finish, and the driver writes them to the store
  (idempotently, by key), so a killed driver resumes with ``--resume`` on either engine.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

from ..targets.target import Target, TargetSpec
from .engine import Outcome, failure
from .units import Unit

INSTALL = "the Ray engine needs Ray: pip install 'medfool[ray]' (or: pip install 'ray[data]>=2.40,<3')"
_TARGETS: dict[str, Target] = {}  # in each worker process: run fingerprint -> the target built there


class RayUnavailable(ImportError):
    pass


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailable(INSTALL) from None
    return ray


def _run_unit(spec: TargetSpec, unit: Unit) -> Outcome:
    """A Ray task: build the target once per worker process, then run the unit (its failure is returned, not raised)."""
    import torch

    from .execute import execute

    torch.set_num_threads(int(os.environ.get("MEDFOOL_WORKER_THREADS", "1")))
    from ..targets.precision import run_fingerprint

    cache_key = run_fingerprint(spec.fingerprint, spec.precision, spec.channels_last, spec.compiled)
    target = _TARGETS.get(cache_key)
    if target is None:
        from ..targets.rebuild import rebuild

        target = _TARGETS[cache_key] = rebuild(spec, "cuda" if spec.device.startswith("cuda") else "cpu")
    try:
        return execute(unit, target)
    except Exception as exc:  # noqa: BLE001 - the unit's own failure travels back as data
        return failure(unit, exc)


class RayEngine:
    """Runs units as Ray tasks.

    ``address`` joins a running cluster; None joins ``$RAY_ADDRESS`` when it is set and otherwise starts a fresh
    local instance (never a stale cluster recorded in ``/tmp/ray`` by an earlier ``ray start``).
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None, max_retries: int = 3,
                 threads_per_worker: int = 1) -> None:
        self.ray = _ray()
        self.address = address
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self.threads = threads_per_worker

    def _init(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        env = {"env_vars": {"MEDFOOL_WORKER_THREADS": str(self.threads)}}
        address = self.address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, runtime_env=env, log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=self.num_cpus, runtime_env=env, log_to_driver=False, include_dashboard=False)

    def run(self, units: Sequence[Unit], target: Target) -> Iterator[Outcome]:
        if not units:
            return
        if target.spec is None:
            raise ValueError("this target cannot be rebuilt on a worker (no TargetSpec); use the local engine")
        self._init()
        ray = self.ray
        gpu = target.spec.device.startswith("cuda")
        task = ray.remote(max_retries=self.max_retries, retry_exceptions=False)(_run_unit)
        task = task.options(num_gpus=1, num_cpus=0) if gpu else task.options(num_cpus=1)
        spec_ref = ray.put(target.spec)  # once: every task gets the reference, not a copy
        pending = {task.remote(spec_ref, u): u for u in units}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                unit = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the worker died more often than it may be retried
                    yield failure(unit, exc)

    def shutdown(self) -> None:
        if self.ray.is_initialized():
            self.ray.shutdown()


def make_engine(name: str, *, address: str | None = None) -> Any:
    """The engine a command's ``--engine`` names."""
    from .engine import LocalEngine

    if name == "local":
        if address:
            raise ValueError("--ray-address needs --engine ray")
        return LocalEngine()
    if name == "ray":
        return RayEngine(address=address)
    raise ValueError(f"--engine {name!r}: expected local or ray")
