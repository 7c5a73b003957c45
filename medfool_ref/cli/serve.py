"""``medfool serve``: the reference model (or a user's) over the Open Inference Protocol, with KServe's ModelServer.

Needs the ``serve`` extra (``pip install 'medfool[serve]'``: kserve). Scores are the model's softmax
probabilities; ``--label-only`` answers the top-1 class index only. Loopback by default.

``--detector`` puts the stateful query detector (``defences.querydetect``; Chen, Carlini & Wagner 2020) in front
of the model: its threshold is set at start on the four quadrants of every sample tile (32 px) for
``--detector-fpr`` false positives. The design is deliberately simple: one detector state per client, a client
being its bearer token (hashed in memory, never logged; requests without one share a state); once a client's
stream is flagged, that request and every later one from the client are refused with HTTP 403 and a message
saying why, and one line goes to the server's log. Other clients are unaffected.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .params import UsageError


def clean_quadrants(tiles: list[Any], *, side: int = 32) -> Any:
    """The four quadrants of each tile, area-resized to ``side`` px: (4 * len(tiles), 3, side, side) clean images for
    setting the query detector's threshold (distinct, realistic benign queries)."""
    import torch
    import torch.nn.functional as F

    from ..inputs.tiles import read_tile

    out = []
    for t in tiles:  # one file read per tile; the cutting and resizing are batched
        img = read_tile(t.path)
        h, w = img.shape[-2] // 2, img.shape[-1] // 2
        quads = img[:, :2 * h, :2 * w].reshape(3, 2, h, 2, w).permute(1, 3, 0, 2, 4).reshape(4, 3, h, w)
        out.append(F.interpolate(quads, size=(side, side), mode="area"))
    return torch.cat(out)


class Gate:
    """Per-client detector states behind a served model: ``check(images, headers)`` observes a batch for its
    client and raises :class:`Refused` once that client's stream is flagged."""

    def __init__(self, make: Any) -> None:
        import threading

        self.make, self.states, self.lock = make, {}, threading.Lock()

    @staticmethod
    def client(headers: Any) -> str:
        import hashlib

        auth = (headers or {}).get("authorization") or (headers or {}).get("Authorization") or ""
        return hashlib.sha256(auth.encode()).hexdigest()[:12] if auth else "anonymous"

    def check(self, images: Any, headers: Any) -> None:
        key = self.client(headers)
        with self.lock:
            state = self.states.setdefault(key, self.make())
        was = state.first_flag
        if was is None:
            state.observe(images)
        if state.first_flag is not None:
            if was is None:
                print(f"medfool serve: client {key} flagged at query {state.first_flag} by the {state.describe()}; "
                      "refusing its further queries", file=sys.stderr, flush=True)
            raise Refused(f"query stream flagged as a query-based attack at query {state.first_flag} by the "
                          f"{state.describe()}; further queries from this client are refused")


class Refused(Exception):
    """A client's stream was flagged by the query detector (answered as HTTP 403)."""


def build_model(name: str, net: Any, classes: tuple[str, ...], label_only: bool, gate: Gate | None = None) -> Any:
    import numpy as np
    import torch
    from kserve import Model
    from kserve.protocol.infer_type import InferOutput, InferResponse

    class Served(Model):
        def __init__(self) -> None:
            super().__init__(name)
            self.ready = True

        def get_input_types(self) -> list[dict]:
            return [{"name": "tiles", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]

        def get_output_types(self) -> list[dict]:
            return [{"name": "label" if label_only else "scores", "datatype": "INT64" if label_only else "FP32",
                     "shape": [-1, 1] if label_only else [-1, len(classes)]}]

        async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
            x = np.asarray(payload.inputs[0].as_numpy(), dtype=np.float32)
            if gate is not None:
                from fastapi import HTTPException

                try:
                    gate.check(torch.from_numpy(x), headers)
                except Refused as exc:
                    raise HTTPException(status_code=403, detail=str(exc)) from None
            with torch.no_grad():
                probs = net(torch.from_numpy(x)).float().softmax(1).numpy()
            if label_only:
                out = InferOutput("label", [x.shape[0], 1], "INT64", probs.argmax(1)[:, None].astype(np.int64))
            else:
                out = InferOutput("scores", list(probs.shape), "FP32", probs.astype(np.float32))
            return InferResponse(model_name=name, infer_outputs=[out], response_id=payload.id or "")

    return Served()


def run_serve(args: argparse.Namespace) -> int:
    try:
        from kserve import ModelServer
    except ImportError:
        raise UsageError("medfool serve needs KServe: pip install 'medfool[serve]'") from None
    from .audit import _model_target

    args.device = "cpu"
    if not 0 < args.detector_fpr < 1:
        raise UsageError(f"--detector-fpr {args.detector_fpr}: expected a number in (0, 1)")
    target = _model_target(args)
    gate = None
    if args.detector:
        from ..defences.querydetect import QueryDetector, calibrate
        from ..inputs.samples import sample_tiles

        try:
            threshold = calibrate(clean_quadrants(sample_tiles()), fpr=args.detector_fpr)
        except ValueError as exc:
            raise UsageError(f"--detector: {exc}") from None
        def fresh() -> QueryDetector:
            d = QueryDetector(threshold)
            d.fpr = args.detector_fpr
            return d

        gate = Gate(fresh)
        print(f"query detector on: threshold {threshold:.4f}, set for {args.detector_fpr:g} false positives on "
              "the sample tiles' quadrants", file=sys.stderr)
    model = build_model(args.name, target.model.eval(), target.classes, args.label_only, gate)
    print(f"serving {target.name} as {args.name} at http://127.0.0.1:{args.port}/v2/models/{args.name}", file=sys.stderr)
    sys.argv = sys.argv[:1]  # KServe reads its own options from the command line
    ModelServer(http_port=args.port, enable_grpc=False, workers=1).start([model])
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="serve a tile classifier over the Open Inference Protocol (KServe ModelServer)")
    p.add_argument("--model", default="reference", help="'reference' (default) or path/to/file.py:factory")
    p.add_argument("--weights", help=".safetensors or a state dict")
    p.add_argument("--config", help="model.yaml (required for a user's model)")
    p.add_argument("--name", default="tilenet", help="the model's name in the URL (default tilenet)")
    p.add_argument("--port", type=int, default=8080, help="HTTP port on 127.0.0.1 (default 8080)")
    p.add_argument("--label-only", action="store_true", help="answer the top-1 class index only")
    p.add_argument("--detector", action="store_true",
                   help="stateful query-attack detector: a client whose queries crowd together is refused (HTTP 403)")
    p.add_argument("--detector-fpr", type=float, default=0.05,
                   help="the detector's false-positive rate on clean tiles, which sets its threshold (default 0.05)")
    p.set_defaults(func=run_serve)
