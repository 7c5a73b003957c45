"""``medfool certify``: randomized smoothing (Cohen et al. 2019) of the reference model or a user's model.

Noise-augmented fine-tuning of the base model at sigma through the one training loop (checkpointed, so a killed
run resumes), then CERTIFY on held-out tiles through the campaign core (units keyed by the base model, sigma, n0,
n, alpha, chunk and seed; ``--resume``, ``--engine ray``). Writes ``certify.json``, ``certified-accuracy.png``,
``smoothed.safetensors`` (the noise-tuned base) and ``results.sqlite``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from pathlib import Path
from typing import Any

from .params import RunFailed, UsageError
from .robust_common import Checkpoint, Eta, add_model_options, data_hash, model_target, run_key, split_data


def _check(args: argparse.Namespace) -> None:
    from ..defences.smoothing import check_smoothing

    try:
        check_smoothing(sigma=args.sigma, n0=args.n0, n=args.n, alpha=args.alpha, chunk=args.chunk)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.finetune_steps < 0 or args.batch_size < 1:
        raise UsageError("--finetune-steps must be >= 0 and --batch-size >= 1")


def noise_finetune(target: Any, train: list[Any], *, sigma: float, steps: int, seed: int, out: Path, resume: bool) -> Any:
    """The base model fine-tuned on Gaussian-noise-augmented crops (checkpointed in OUT/smoothing.ckpt)."""
    from ..campaign.certify import noise_bank_config, retarget
    from ..defences.smoothing import noise_hook
    from ..training.loop import crop_bank, train as train_loop

    config = noise_bank_config(steps, seed)
    ckpt = Checkpoint(out, "smoothing", run_key(base=target.fingerprint, sigma=sigma, config=config.as_dict(), data=data_hash(train)))
    state = ckpt.load() if resume else None
    bank = crop_bank(train, crop=config.crop)
    model = train_loop(bank, config, device=target.device, batch_hook=noise_hook(sigma), init=target.model,
                       progress=Eta(f"noise fine-tuning at sigma {sigma:g}"), checkpoint=ckpt, checkpoint_every=25, resume_from=state)
    return retarget(target, model, f"{target.name} + noise sigma={sigma:g}")


def run_certify(args: argparse.Namespace) -> int:
    from ..campaign.certify import CERTIFY, RADII, certified_table, certify_units
    from ..campaign.run import run_campaign
    from ..campaign.store import ResultsStore
    from ..reports.hardening import certified_curve
    from ..reports.provenance import provenance
    from ..targets.reference import model_bytes
    from ..targets.target import state_bytes
    from .audit import engine_from

    _check(args)
    engine = engine_from(args)
    base = model_target(args)  # pins verified before anything runs
    train, held = split_data(args, base.classes, need_train=args.finetune_steps > 0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    smoothed = base
    if args.finetune_steps > 0:
        smoothed = noise_finetune(base, train, sigma=args.sigma, steps=args.finetune_steps, seed=args.seed, out=out, resume=args.resume)
    inner = getattr(smoothed.model, "net", smoothed.model) if smoothed.spec and smoothed.spec.kind == "user" else smoothed.model
    weights = model_bytes(smoothed.model) if smoothed.spec and smoothed.spec.kind == "reference" else state_bytes(inner)
    (out / "smoothed.safetensors").write_bytes(weights)
    units = certify_units(held, sigma=args.sigma, n0=args.n0, n=args.n, alpha=args.alpha, seed=args.seed, chunk=args.chunk,
                          batch_size=args.batch_size, base=base.fingerprint)
    store = ResultsStore(out)
    print(f"certifying {len(held)} held-out tiles at sigma {args.sigma:g} (n0 {args.n0}, n {args.n}, alpha {args.alpha:g})",
          file=sys.stderr)
    try:
        run = run_campaign(units, smoothed, store, engine=engine, resume=args.resume, label="certify",
                           meta={"base_fingerprint": base.fingerprint})
    finally:
        getattr(engine, "shutdown", lambda: None)()
    for f in run.failures:
        raise (UsageError if f.kind == "invalid" else RunFailed)(f"certify: {f.error.splitlines()[0]}")
    rows = [{"name": r["name"], "label": r["label"], "pred": r["pred_before"], **{k: r["extra"][k] for k in ("radius", "p_lower", "abstain")}}
            for r in store.items(run.keys)]
    table = certified_table(rows, RADII)
    max_radius = args.sigma * _ndtri(args.alpha ** (1 / args.n))
    doc = {
        "method": "randomized smoothing, CERTIFY (Cohen, Rosenfeld & Kolter 2019)",
        "base_model": base.name, "base_fingerprint": base.fingerprint, "smoothed_fingerprint": smoothed.fingerprint,
        "params": {"sigma": args.sigma, "n0": args.n0, "n": args.n, "alpha": args.alpha, "seed": args.seed, "chunk": args.chunk,
                   "finetune_steps": args.finetune_steps},
        "held_out_tiles": len(held), "train_data_sha256": data_hash(train) if train else None,
        "largest_certifiable_radius": max_radius,
        "abstained": sum(r["abstain"] for r in rows),
        "certified_accuracy": table, "tiles": rows, "device": str(smoothed.device), "engine": engine.name,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "units": len(run.keys),
        "provenance": provenance("certify", getattr(args, "command_line", "medfool certify"), str(smoothed.device)),
    }
    (out / "certify.json").write_text(json.dumps(doc, indent=2) + "\n")
    certified_curve(rows, out / "certified-accuracy.png", sigma=args.sigma, max_radius=max_radius)
    parts = ", ".join(f"r={t['radius']:g}: {t['certified']}/{t['tiles']} ({t['accuracy']:.0%}; 95% {t['wilson95'][0]:.0%}-{t['wilson95'][1]:.0%})"
                      for t in table)
    print(f"certified accuracy {parts}; {doc['abstained']} abstained; no radius above {max_radius:.3f} is reachable with n={args.n}")
    print(f"wrote {out}/certify.json, certified-accuracy.png, smoothed.safetensors")
    return 0


def _ndtri(p: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(p) if 0 < p < 1 else math.inf


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from .audit import add_engine_options

    p = sub.add_parser("certify", help="randomized smoothing: noise fine-tuning, then certified L2 radii on held-out tiles")
    add_model_options(p)
    p.add_argument("--sigma", type=float, default=0.25, help="noise level (std of the Gaussian, pixels in [0, 1]; default 0.25)")
    p.add_argument("--n0", type=int, default=32, help="noise draws that pick the class (default 32; Cohen et al.: 100)")
    p.add_argument("--n", type=int, default=256, help="noise draws that certify it (default 256; Cohen et al.: 100,000)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability of each certificate (default 0.001)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=256, help="noisy images per forward pass (memory bound; default 256)")
    p.add_argument("--batch-size", type=int, default=8, help="tiles per unit (default 8)")
    p.add_argument("--finetune-steps", type=int, default=100, help="noise fine-tuning steps of the base model (0: certify it as is)")
    add_engine_options(p)
    p.set_defaults(func=run_certify)
