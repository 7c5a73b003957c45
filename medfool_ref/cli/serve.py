"""``medfool serve``: the reference model (or a user's) over the Open Inference Protocol, with KServe's ModelServer.

Needs the ``serve`` extra (``pip install 'medfool[serve]'``: kserve). Scores are the model's softmax
probabilities; ``--label-only`` answers the top-1 class index only. Loopback by default.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .params import UsageError


def build_model(name: str, net: Any, classes: tuple[str, ...], label_only: bool) -> Any:
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
    target = _model_target(args)
    model = build_model(args.name, target.model.eval(), target.classes, args.label_only)
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
    p.set_defaults(func=run_serve)
