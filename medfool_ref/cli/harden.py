"""``medfool harden``: adversarial fine-tuning of the reference model or a user's model through the one training loop.

PGD adversarial training (Madry et al. 2018), TRADES (Zhang et al. 2019) or adversarial stain augmentation;
checkpointed every 25 steps (``--resume`` after a kill continues to the same weights). Clean and robust accuracy
before and after are measured on held-out tiles the model was not tuned on, robust accuracy by the audit's worst
case at ``--eval-eps`` (not by the training attack). Writes ``hardened.safetensors``, ``card.json`` and ``CARD.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import sys
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from .params import UsageError
from .robust_common import Checkpoint, Eta, add_model_options, data_hash, model_target, run_key, split_data


def _eps(text: str, flag: str) -> float:
    try:
        v = float(Fraction(text)) if "/" in text else float(text) / 255
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"{flag} {text!r}: expected a budget such as 2/255") from None
    if not math.isfinite(v) or not 0 < v <= 1:
        raise UsageError(f"{flag} {text!r}: must be a finite budget in (0, 1]")
    return v


def _interval(k: int, n: int) -> dict[str, Any]:
    from ..training.reference import wilson_interval

    lo, hi = wilson_interval(k, n)
    return {"correct": k, "tiles": n, "accuracy": k / n if n else None, "wilson95": [lo, hi]}


class _Stopped(Exception):
    pass


def fine_tune(base: Any, train: list[Any], recipe: dict[str, Any], config: Any, *, out: Path | None = None,
              resume: bool = False, stop_after: int | None = None) -> tuple[Any, bytes, dict[str, str]]:
    """(the hardened target, its weights as safetensors bytes, the sha256 of its state every 25 steps): ``base``
    fine-tuned on ``train`` by ``recipe``'s method through the one training loop, checkpointed in ``out`` (when given)
    every 25 steps. ``stop_after`` (a multiple of 25) stops there, for a partial reproduction of a recorded run: the
    schedule is the full run's, the result is the trajectory alone (target None, no weights)."""
    from ..campaign.certify import retarget
    from ..targets.reference import model_bytes
    from ..targets.target import state_bytes
    from ..training.loop import crop_bank, train as train_loop
    from ..training.robust import objective

    ckpt = state = None
    if out is not None:
        ckpt = Checkpoint(out, "harden", run_key(base=base.fingerprint, recipe=recipe, data=data_hash(train)))
        state = ckpt.load() if resume else None
        if state is not None:
            print(f"resuming from step {state['step']}", file=sys.stderr)
    trajectory: dict[str, str] = dict(state.get("trajectory", {})) if state else {}

    def every_25(step: int, loop_state: dict[str, Any]) -> None:
        trajectory[str(step)] = state_sha256(loop_state["model"])
        if ckpt is not None:
            ckpt(step, {**loop_state, "trajectory": dict(trajectory)})
        if stop_after is not None and step >= stop_after:
            raise _Stopped

    loss = objective(recipe["method"], eps=recipe["eps"], steps=recipe["attack_steps"], beta=recipe["beta"] or 0.0,
                     stain=recipe["stain"] or 0.3)
    try:
        model = train_loop(crop_bank(train, crop=config.crop), config, device=base.device, init=base.model, loss_fn=loss,
                           progress=Eta(f"{recipe['method']} fine-tuning"), checkpoint=every_25, checkpoint_every=25, resume_from=state)
    except _Stopped:
        return None, b"", trajectory
    hardened = retarget(base, model, f"{base.name} + {recipe['method']}")
    inner = getattr(model, "net", model) if base.spec and base.spec.kind == "user" else model
    return hardened, (model_bytes(model) if base.spec and base.spec.kind == "reference" else state_bytes(inner)), trajectory


def state_sha256(state: dict[str, Any]) -> str:
    """sha256 over a model's state (names and raw tensor bytes, in name order): the weights at a training step."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def run_harden(args: argparse.Namespace) -> int:
    from ..campaign.hardening import worst_case
    from ..reports.provenance import provenance
    from ..training.reference import reference_config

    eps, eval_eps = _eps(args.eps, "--eps"), _eps(args.eval_eps, "--eval-eps")
    if args.steps < 1 or args.attack_steps < 1 or not (math.isfinite(args.beta) and args.beta >= 0) or not (
            math.isfinite(args.lr) and args.lr > 0) or not (math.isfinite(args.stain) and 0 < args.stain < 1):
        raise UsageError("--steps and --attack-steps must be >= 1, --beta >= 0, --lr > 0 and --stain in (0, 1), all finite")
    base = model_target(args)  # pins verified before anything runs
    train, held = split_data(args, base.classes, need_train=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = {p: {"steps": args.eval_steps} for p in ("apgd-ce", "apgd-t")} if args.eval_steps else None
    config = replace(reference_config(), steps=args.steps, lr=args.lr, seed=args.seed, crop=args.crop, batch_size=args.batch_size)
    recipe = {"method": args.method, "eps": eps, "attack_steps": args.attack_steps, "beta": args.beta if args.method == "trades" else None,
              "stain": args.stain if args.method == "stain" else None, "train_config": config.as_dict(), "init": base.name}
    print(f"measuring {base.name} before hardening on {len(held)} held-out tiles (audit worst case at {eval_eps * 255:g}/255)",
          file=sys.stderr)
    before = worst_case(held, base, out / "audit-before", eps=eval_eps, overrides=overrides, resume=args.resume)
    hardened, weights, trajectory = fine_tune(base, train, recipe, config, out=out, resume=args.resume)
    (out / "hardened.safetensors").write_bytes(weights)
    after = worst_case(held, hardened, out / "audit-after", eps=eval_eps, overrides=overrides, resume=args.resume)
    card = {
        "model": hardened.name, "base_fingerprint": base.fingerprint, "fingerprint": hardened.fingerprint,
        "weights": "hardened.safetensors", "weights_sha256": hashlib.sha256(weights).hexdigest(), "recipe": recipe,
        "trajectory": {"every": 25, "state_sha256": trajectory},
        "train_data": {"tiles": len(train), "sha256": data_hash(train)},
        "held_out": {"tiles": len(held), "sha256": data_hash(held), "note": "none of these tiles was trained on"},
        "evaluation": {"robust_by": "the audit's worst case (" + ", ".join(before["attacks"]) + ")", "eps": eval_eps,
                       "eps_255": round(eval_eps * 255, 6), "apgd_steps": args.eval_steps or 100},
        "before": {"clean": _interval(before["clean"], before["tiles"]), "robust": _interval(before["robust"], before["tiles"])},
        "after": {"clean": _interval(after["clean"], after["tiles"]), "robust": _interval(after["robust"], after["tiles"])},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "device": str(base.device),
        "provenance": provenance("hardening", getattr(args, "command_line", "medfool harden"), str(base.device)),
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / "CARD.md").write_text(_card_md(card))
    b, a = card["before"], card["after"]
    print(f"held-out clean accuracy {_fmt(b['clean'])} -> {_fmt(a['clean'])}; worst-case robust accuracy at "
          f"{eval_eps * 255:g}/255 {_fmt(b['robust'])} -> {_fmt(a['robust'])}")
    print(f"wrote {out}/hardened.safetensors, card.json, CARD.md")
    return 0


def _fmt(r: dict[str, Any]) -> str:
    lo, hi = r["wilson95"]
    return f"{r['correct']}/{r['tiles']} ({r['accuracy']:.0%}; 95% {lo:.0%}-{hi:.0%})"


def _card_md(card: dict[str, Any]) -> str:
    r = card["recipe"]
    e = card["evaluation"]
    lines = [f"# Hardened model: {card['model']}", "",
             f"Recipe: {r['method']} at L-inf {r['eps'] * 255:g}/255, {r['attack_steps']} inner steps, "
             f"{r['train_config']['steps']} fine-tuning steps from {r['init']}.",
             f"Training tiles: {card['train_data']['tiles']} (sha256 of their hashes {card['train_data']['sha256'][:16]}...).",
             f"Held-out tiles (never trained on): {card['held_out']['tiles']}.", "",
             f"| | clean accuracy | robust accuracy at {e['eps_255']:g}/255 (audit worst case) |", "|---|---|---|",
             f"| before | {_fmt(card['before']['clean'])} | {_fmt(card['before']['robust'])} |",
             f"| after | {_fmt(card['after']['clean'])} | {_fmt(card['after']['robust'])} |", "",
             f"Robust accuracy is measured by {e['robust_by']}, not by the training attack. Weights: {card['weights']} "
             f"(sha256 {card['weights_sha256']}).", ""]
    return "\n".join(lines)


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("harden", help="adversarial fine-tuning (PGD-AT, TRADES, stain) with clean and robust accuracy before/after")
    add_model_options(p)
    p.add_argument("--method", choices=("pgd-at", "trades", "stain"), default="pgd-at")
    p.add_argument("--eps", default="4/255", help="training budget (L-inf; default 4/255)")
    p.add_argument("--attack-steps", type=int, default=3, help="inner attack steps per training step (default 3)")
    p.add_argument("--beta", type=float, default=6.0, help="TRADES's weight of the robust term (default 6)")
    p.add_argument("--stain", type=float, default=0.3, help="stain box: +- this on each stain's optical-density scale")
    p.add_argument("--steps", type=int, default=100, help="fine-tuning steps (default 100)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--crop", type=int, default=64, help="training crop (px, default 64)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-eps", default="2/255", help="budget of the before/after worst case (default 2/255)")
    p.add_argument("--eval-steps", type=int, help="APGD steps in the worst case (default: the audit's 100)")
    p.set_defaults(func=run_harden)
