"""A served model as a target: a client for the Open Inference Protocol (KServe V2 REST), as a query function.

``EndpointClient`` speaks the protocol's JSON form (``Content-Type: application/json`` on every body): server and
model readiness, model metadata (input name, shape, datatype), ``infer``. It is the client a hospital's network
team can accept: a total query budget, a rate limit (requests per second) and a concurrency limit, timeouts,
retries with exponential backoff on 429/503 and dropped connections and a clear stop after too many, TLS verified
by default, a bearer token read from an environment variable and kept only in memory, and a log entry per request
(images, bytes, latency, status; never a header). ``EndpointModel`` wraps it as an ``nn.Module`` returning
log-scores (or a one-hot row in label mode), so every attack and the executor run on it unchanged.
``endpoint_target`` keys results by the model's metadata and a fingerprint of its answers on fixed probe tiles,
so ``--resume`` reuses them and a changed model behind the same URL is noticed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import numpy as np
import torch
from torch import nn

RETRY_STATUS = (429, 502, 503, 504)
PROBES = 4  # probe tiles whose answers fingerprint the model


class EndpointError(RuntimeError):
    """The endpoint cannot be used or answered wrongly: the message names it and says why."""


def _server_message(resp: Any) -> str:
    """The server's own explanation of a refusal: the ``error`` or ``detail`` field of a JSON body, else the text."""
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    text = doc.get("error") or doc.get("detail") if isinstance(doc, dict) else None
    return str(text if isinstance(text, str) and text else resp.text)[:500]


@dataclass
class ClientOptions:
    token_env: str | None = None
    rate_limit: float = 20.0  # requests per second (0: none)
    concurrency: int = 2
    timeout: float = 30.0
    retries: int = 5
    backoff: float = 0.2  # seconds, doubled at each retry
    max_batch: int = 16  # images per request
    total_queries: int | None = None  # images, over the whole run
    verify: bool = True


@dataclass
class QueryRecord:
    images: int
    bytes_sent: int
    bytes_received: int
    seconds: float
    status: int | str
    attempt: int


@dataclass
class EndpointClient:
    url: str
    options: ClientOptions = field(default_factory=ClientOptions)
    on_record: Callable[[QueryRecord], None] | None = None

    def __post_init__(self) -> None:
        import httpx

        parts = urlsplit(self.url)
        path = parts.path.rstrip("/")
        if parts.scheme not in ("http", "https") or "/v2/models/" not in path:
            raise EndpointError(f"{self.url}: expected http(s)://HOST[:PORT]/v2/models/NAME[/versions/V]")
        base_path, _, rest = path.partition("/v2/models/")
        self.base = f"{parts.scheme}://{parts.netloc}{base_path}"
        self.model_path = f"{self.base}/v2/models/{rest}"
        self.model_name = rest.split("/")[0]
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.options.token_env:
            token = os.environ.get(self.options.token_env)
            if not token:
                raise EndpointError(f"{self.url}: --token-env {self.options.token_env} is not set in the environment")
            headers["Authorization"] = f"Bearer {token}"
        limits = httpx.Limits(max_connections=self.options.concurrency, max_keepalive_connections=self.options.concurrency)
        self._http = httpx.Client(headers=headers, timeout=self.options.timeout, verify=self.options.verify, limits=limits)
        self._lock = threading.Lock()
        self._next = 0.0
        self.sent = 0  # images answered
        self.requests = 0
        self.retried = 0
        self.records: list[QueryRecord] = []
        self._pool = ThreadPoolExecutor(self.options.concurrency) if self.options.concurrency > 1 else None

    def close(self) -> None:
        self._http.close()
        if self._pool is not None:
            self._pool.shutdown()

    # ------------------------------------------------------------------ protocol

    def _wait_turn(self) -> None:
        if self.options.rate_limit <= 0:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + 1.0 / self.options.rate_limit
        if slot > now:
            time.sleep(slot - now)

    def _request(self, method: str, url: str, body: bytes | None = None, images: int = 0) -> Any:
        import httpx

        attempt = 0
        while True:
            self._wait_turn()
            started = time.perf_counter()
            status: int | str
            try:
                resp = self._http.request(method, url, content=body)
                status, received = resp.status_code, len(resp.content)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                resp, status, received = None, type(exc).__name__, 0
            rec = QueryRecord(images, len(body or b""), received, time.perf_counter() - started, status, attempt)
            with self._lock:
                self.requests += 1
                self.records.append(rec)
            if self.on_record is not None:
                self.on_record(rec)
            if resp is not None and resp.status_code < 300:
                try:
                    return resp.json()
                except ValueError:
                    raise EndpointError(f"{url}: the answer is not JSON") from None
            retry = resp is None or resp.status_code in RETRY_STATUS
            if not retry:
                raise EndpointError(f"{url}: HTTP {resp.status_code}{' (refused)' if resp.status_code == 403 else ''}: "
                                    f"{_server_message(resp)}")
            if attempt >= self.options.retries:
                raise EndpointError(f"{url}: gave up after {attempt + 1} attempts (last: {status})")
            with self._lock:
                self.retried += 1
            time.sleep(self.options.backoff * 2 ** attempt)
            attempt += 1

    def ready(self) -> None:
        self._request("GET", f"{self.base}/v2/health/ready")
        self._request("GET", f"{self.model_path}/ready")

    def metadata(self) -> dict[str, Any]:
        meta = self._request("GET", self.model_path)
        inputs = meta.get("inputs") if isinstance(meta, dict) else None
        if not inputs or not isinstance(inputs, list) or "name" not in inputs[0]:
            raise EndpointError(f"{self.model_path}: the metadata names no input tensor")
        return meta

    def infer(self, images: np.ndarray, input_name: str) -> np.ndarray:
        """(B, C, H, W) float32 in [0, 1] -> (B, K) answers, in requests of at most ``max_batch`` images."""
        n = images.shape[0]
        if self.options.total_queries is not None and self.sent + n > self.options.total_queries:
            raise EndpointError(f"{self.model_path}: the total query budget ({self.options.total_queries}) would be exceeded")
        chunks = [images[i:i + self.options.max_batch] for i in range(0, n, self.options.max_batch)]
        run = (lambda c: self._infer_one(c, input_name))
        parts = list(self._pool.map(run, chunks)) if self._pool is not None and len(chunks) > 1 else [run(c) for c in chunks]
        return np.concatenate(parts)

    def _infer_one(self, images: np.ndarray, input_name: str) -> np.ndarray:
        body = json.dumps({"inputs": [{"name": input_name, "shape": list(images.shape), "datatype": "FP32",
                                       "data": images.astype(np.float32).reshape(-1).tolist()}]}).encode()
        doc = self._request("POST", f"{self.model_path}/infer", body, images.shape[0])
        try:
            out = doc["outputs"][0]
            arr = np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise EndpointError(f"{self.model_path}: malformed infer response ({type(exc).__name__}: {exc})") from None
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[0] != images.shape[0]:
            raise EndpointError(f"{self.model_path}: answered shape {list(arr.shape)} for {images.shape[0]} images")
        if not np.isfinite(arr).all():
            raise EndpointError(f"{self.model_path}: answered non-finite scores (NaN or inf)")
        with self._lock:
            self.sent += images.shape[0]
        return arr


class EndpointModel(nn.Module):
    """A served model as a query function: log-scores per class (``output="scores"``) or a one-hot row of the
    answered label (``output="label"``: a label-only server, or scores reduced to their top-1 by choice)."""

    query_only = True  # no gradients: the audit runs its query-only battery and skips the white-box validity checks

    def __init__(self, client: EndpointClient, input_name: str, classes: int, output: str = "scores") -> None:
        super().__init__()
        self.client, self.input_name, self.classes, self.output = client, input_name, classes, output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = self.client.infer(x.detach().float().cpu().numpy(), self.input_name)
        if arr.shape[1] == 1:  # a label-only answer: the class index
            idx = arr[:, 0]
            if not np.all((idx == np.round(idx)) & (idx >= 0) & (idx < self.classes)):
                raise EndpointError(f"{self.client.model_path}: label answers outside 0..{self.classes - 1}")
            out = np.eye(self.classes)[idx.astype(int)]
            if self.output != "label":
                raise EndpointError(f"{self.client.model_path}: answers labels only; use --output label")
        elif arr.shape[1] != self.classes:
            raise EndpointError(f"{self.client.model_path}: answered {arr.shape[1]} scores, expected {self.classes} classes")
        elif self.output == "label":
            out = np.eye(self.classes)[arr.argmax(1)]
        else:
            probs = arr.min() >= 0 and np.allclose(arr.sum(1), 1, atol=1e-3)
            out = np.log(np.clip(arr, 1e-12, 1)) if probs else arr
        t = torch.as_tensor(out, dtype=torch.float32, device=x.device)
        return t if self.output != "label" else (t - 1) * 1e4  # one-hot as logits: softmax gives the label all mass


def probe_tiles(size: int = 64) -> torch.Tensor:
    """Fixed probe images (seeded noise and flat colours): the same bytes on every run."""
    gen = torch.Generator().manual_seed(20_240_024)
    noise = torch.rand(PROBES // 2, 3, size, size, generator=gen)
    flat = torch.rand(PROBES - PROBES // 2, 3, 1, 1, generator=gen).expand(-1, 3, size, size)
    return torch.cat([noise, flat])


def answers_fingerprint(meta: dict[str, Any], answers: np.ndarray, output: str) -> str:
    doc = {"metadata": {k: meta.get(k) for k in ("name", "versions", "platform", "inputs", "outputs")}, "output": output,
           "answers": [[round(float(v), 4) for v in row] for row in answers]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def endpoint_target(url: str, classes: tuple[str, ...] | list[str], *, output: str = "scores",
                    options: ClientOptions | None = None, on_record: Callable[[QueryRecord], None] | None = None,
                    positive: tuple[str, ...] = ("TUM",), probe_size: int = 64) -> Any:
    """A :class:`Target` for the model at ``url``: ready checked, metadata read, answers on the probe tiles hashed."""
    from .target import Target

    if output not in ("scores", "label"):
        raise EndpointError(f"--output {output!r}: expected scores or label")
    client = EndpointClient(url, options or ClientOptions(), on_record)
    client.ready()
    meta = client.metadata()
    model = EndpointModel(client, meta["inputs"][0]["name"], len(classes), output)
    answers = model(probe_tiles(probe_size)).numpy()
    if output == "label":
        answers = answers.argmax(1)[:, None]
    t = Target(model, tuple(classes), answers_fingerprint(meta, answers, output), name=url, positive=positive)
    return t


def dry_run_estimate(queries: int, max_batch: int, rate_limit: float, concurrency: int) -> dict[str, float]:
    """Requests and seconds ``queries`` images take at the rate limit (the limit binds; concurrency only hides latency)."""
    requests = math.ceil(queries / max(max_batch, 1))
    seconds = requests / rate_limit if rate_limit > 0 else float("nan")
    return {"queries": queries, "requests": requests, "seconds": seconds, "concurrency": concurrency}
