"""``medfool defend detect``: a detection defence (feature squeezing, input-quality check) calibrated on clean tiles
and judged by plain and detector-aware attacks; writes ``detect.json`` and prints every rate with its interval.

The input-restoration defences run through ``medfool audit --defence``; a detector changes what counts as fooled (a
flagged tile is rejected), so it has its own command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .params import UsageError


def _budgets(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--budgets {text}: give numbers in /255, comma-separated (e.g. 2,8)") from None
    if not values or any(not 0 < v <= 255 for v in values):  # NaN fails the comparison too
        raise UsageError(f"--budgets {text}: each budget must be in (0, 255] (in /255)")
    return [v / 255 for v in values]


def run_detect(args: argparse.Namespace) -> int:
    from ..defences.specs import DETECTORS, DefenceError, parse

    try:
        spec, _ = parse(args.defence)
    except DefenceError as exc:
        raise UsageError(str(exc)) from None
    if spec.kind != "detection":
        raise UsageError(f"--defence {args.defence}: not a detector; detectors: {', '.join(DETECTORS)} "
                         "(input restoration runs through medfool audit --defence)")
    eps = _budgets(args.budgets)
    if not 1 <= args.steps <= 10_000 or args.batch_size < 1 or (args.max_tiles is not None and args.max_tiles < 1):
        raise UsageError("--steps must be in [1, 10000], --batch-size and --max-tiles >= 1")
    from ..campaign.detection import evaluate_detector
    from ..inputs.datasets import DataError, load_dataset
    from ..reports.detection import detection_doc, detection_lines
    from .audit import _target

    target = _target(args)
    try:
        if args.data == "sample" and args.calibration_data is None:
            from ..campaign.plan import sample_split

            calibration, evaluation = sample_split()  # the model's training split calibrates; held-out tiles evaluate
        else:
            if args.calibration_data is None:
                raise UsageError("a detector sets its threshold on clean tiles: give --calibration-data (tiles not in --data)")
            evaluation = load_dataset(args.data, target.classes).items
            calibration = load_dataset(args.calibration_data, target.classes).items
    except DataError as exc:
        raise UsageError(str(exc)) from None
    if args.max_tiles is not None:
        evaluation = evaluation[:args.max_tiles]
    print(f"detector {args.defence}: calibrating on {len(calibration)} clean tiles, attacking {len(evaluation)} tiles "
          f"at {', '.join(f'{e * 255:g}' for e in eps)}/255 with {args.steps} steps", file=sys.stderr)
    try:
        counts = evaluate_detector(target.model, args.defence, calibration, evaluation, eps=eps, steps=args.steps,
                                   seed=args.seed, batch_size=args.batch_size, device=target.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"model": target.name, "fingerprint": target.fingerprint, **detection_doc(counts)}
    (out / "detect.json").write_text(json.dumps(doc, indent=2) + "\n")
    for line in detection_lines(counts):
        print(line)
    print(f"wrote {out}/detect.json")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("defend", help="defences that are not input transformations: detect (a detector judged by adaptive attacks)")
    dsub = p.add_subparsers(dest="defend_command", required=True, metavar="SUBCOMMAND")
    d = dsub.add_parser("detect", help="calibrate a detector on clean tiles (false-positive rate), then attack it plainly and adaptively")
    d.add_argument("--defence", required=True, metavar="NAME[:KEY=VALUE,...]",
                   help="feature-squeeze[:bits=5,size=2,fpr=0.05] or input-quality[:fpr=0.05]")
    d.add_argument("--data", default="sample", help="labelled tiles to measure on (default 'sample': the held-out split; "
                                                    "the training split then calibrates)")
    d.add_argument("--calibration-data", help="clean tiles the threshold is set on (none of them in --data)")
    d.add_argument("--out", required=True, help="output folder (detect.json)")
    d.add_argument("--model", default="reference", help="'reference' (default) or path/to/file.py:factory")
    d.add_argument("--weights", help=".safetensors, or a state dict torch reads with weights_only=True")
    d.add_argument("--config", help="model.yaml (classes, tumour classes, input; optional sha256 pins)")
    d.add_argument("--device", help="torch device (default: cuda when available)")
    d.add_argument("--budgets", default="2,8", help="L-inf budgets in /255, comma-separated (default 2,8)")
    d.add_argument("--steps", type=int, default=20, help="PGD steps, plain and detector-aware (default 20)")
    d.add_argument("--max-tiles", type=int, help="measure on at most N tiles of --data")
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=run_detect)
