"""``medfool audit``: threat-model a user's own tile classifier on their own labelled tiles.

Exit codes: 0 done (every gate passed), 2 usage error (model, config, data, option), 3 a
``--fail-under`` gate failed, 1 a unit failed for another reason.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

from .params import RunFailed, UsageError, coerce

GATE = re.compile(r"^(?P<name>[\w-]+)@(?P<eps>[^=]+)=(?P<value>.+)$")


def _budget(text: str, what: str) -> float:
    try:
        v = float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"{what} {text!r}: expected a number such as 4/255 or 0.0157") from None
    if not math.isfinite(v) or v <= 0:
        raise UsageError(f"{what} {text!r}: must be a finite number > 0")
    return v


def parse_budgets(text: str | None, default: tuple[float, ...], scale: float) -> tuple[float, ...]:
    if text is None:
        return default
    return tuple(sorted(_budget(t, "--budgets") / scale for t in text.split(",") if t.strip()))


def parse_gates(specs: list[str] | None, probes: list[str], linf: tuple[float, ...]) -> list[dict[str, Any]]:
    """``NAME@EPS=VALUE`` (NAME: worst_case or an attack id; EPS in /255 like 4/255, or 4): checked before anything runs."""
    gates = []
    for spec in specs or []:
        m = GATE.match(spec.strip())
        if m is None:
            raise UsageError(f"--fail-under {spec!r}: expected NAME@EPS=VALUE, e.g. worst_case@4/255=0.60")
        name, eps_text, value_text = m["name"], m["eps"], m["value"]
        eps = _budget(eps_text, f"--fail-under {spec}:")
        eps = eps if "/" in eps_text else eps / 255  # a bare number is in /255
        if not any(abs(eps - b) < 1e-9 for b in linf):
            raise UsageError(f"--fail-under {spec}: {eps * 255:g}/255 is not an audited budget ({', '.join(f'{b * 255:g}/255' for b in linf)})")
        if name != "worst_case" and name not in probes:
            raise UsageError(f"--fail-under {spec}: {name!r} is not worst_case or an audited attack ({', '.join(probes)})")
        try:
            value = float(value_text)
        except ValueError:
            raise UsageError(f"--fail-under {spec}: {value_text!r} is not a number") from None
        if not 0 <= value <= 1 or not math.isfinite(value):
            raise UsageError(f"--fail-under {spec}: the required accuracy must be in [0, 1]")
        gates.append({"gate": spec.strip(), "name": name, "eps": eps, "required": value})
    return gates


def check_gates(doc: dict[str, Any], gates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each gate against the report; a gate never passes on a figure the validity checks marked unreliable."""
    out = []
    for g in gates:
        if g["name"] == "worst_case":
            rows = [w for w in doc["worst_case"] if abs(w["eps"] - g["eps"]) < 1e-9]
        else:
            attack = next(a for a in doc["attacks"] if a["id"] == g["name"])
            rows = [b for b in attack["budgets"] if b["eps"] is not None and abs(b["eps"] - g["eps"]) < 1e-9]
        measured = rows[0]["robust_accuracy"] if rows else None
        unreliable = bool(doc.get("unreliable"))
        out.append({**g, "measured": measured, "passed": measured is not None and measured >= g["required"] and not unreliable,
                    "unreliable": unreliable})
    return out


def _overrides(pairs: list[str] | None, probes: list[str]) -> dict[str, dict[str, Any]]:
    from ..campaign.audit import PROBES
    from ..registry import SPECS

    out: dict[str, dict[str, Any]] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        probe, dot, param = key.strip().partition(".")
        if not sep or not dot:
            raise UsageError(f"--set {pair!r}: expected ATTACK.PARAM=VALUE, e.g. apgd-ce.steps=20")
        if probe not in probes:
            raise UsageError(f"--set {pair}: {probe!r} is not an audited attack ({', '.join(probes)})")
        params = SPECS[PROBES[probe].attack].parameters()
        if param not in params:
            raise UsageError(f"--set {pair}: {probe} takes {', '.join(sorted(params))}")
        out.setdefault(probe, {})[param] = coerce(params[param], raw.strip())
    return out


def engine_from(args: argparse.Namespace) -> Any:
    """The engine ``--engine``/``--ray-address`` name; without Ray installed, how to install it (exit 2)."""
    from ..campaign.ray_engine import RayUnavailable, make_engine

    try:
        return make_engine(args.engine, address=args.ray_address)
    except (RayUnavailable, ValueError) as exc:
        raise UsageError(str(exc)) from None


def add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where units run: in this process (default) or as Ray tasks (pip install 'medfool[ray]')")
    p.add_argument("--ray-address", help="join this Ray cluster (e.g. 10.0.0.5:6379 or auto); default: a local Ray instance")


def _target(args: argparse.Namespace) -> Any:
    from ..targets.precision import with_precision

    target = _model_target(args)
    try:
        return with_precision(target, getattr(args, "precision", "float32"), getattr(args, "channels_last", False),
                              getattr(args, "compile", False))  # the slide commands share this without the options
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _endpoint_target(args: argparse.Namespace, log: Any = None) -> Any:
    from ..targets.config import REFERENCE_CONFIG, ConfigError, load_config
    from ..targets.endpoint import ClientOptions, EndpointError, endpoint_target

    try:
        config = load_config(args.config or REFERENCE_CONFIG)
        opts = ClientOptions(token_env=args.token_env, rate_limit=args.rate_limit, concurrency=args.concurrency,
                             timeout=args.timeout, total_queries=args.total_queries, verify=not args.insecure)
        return endpoint_target(args.endpoint, list(config.classes), output=args.output, options=opts, on_record=log,
                               positive=tuple(config.positive) if hasattr(config, "positive") else ("TUM",))
    except (ConfigError, EndpointError) as exc:
        raise UsageError(str(exc)) from None


def _model_target(args: argparse.Namespace) -> Any:
    from ..targets.config import REFERENCE_CONFIG, ConfigError, load_config
    from ..targets.integrity import IntegrityError, verify_pins
    from ..targets.reference import DEFAULT_WEIGHTS, ModelFileError, default_device
    from ..targets.target import reference_target
    from ..targets.user import ModelError, configured, user_target

    device = args.device or str(default_device())
    try:
        config = load_config(args.config or REFERENCE_CONFIG) if (args.config or args.model == "reference") else None
        if args.model == "reference":
            verify_pins(config.integrity, weights=args.weights or DEFAULT_WEIGHTS, factory=None,
                        where=f"--config {args.config or REFERENCE_CONFIG}")
            target = reference_target(args.weights, device=device)
            if list(config.classes) != list(target.classes):
                raise UsageError(f"--config {args.config}: classes {config.classes} do not match the reference model's {list(target.classes)}")
            return configured(target, config)
        if config is None:
            raise UsageError(f"--model {args.model}: a user's model needs --config model.yaml (class names, tumour classes, input)")
        return user_target(args.model, config, weights=args.weights, device=device, config_path=args.config)
    except (ConfigError, IntegrityError) as exc:
        raise UsageError(str(exc)) from None
    except (ModelError, ModelFileError) as exc:
        raise UsageError(str(exc)) from None


def _provenance(args: argparse.Namespace, probes: list[str], device: str, date: str) -> dict[str, Any]:
    import os
    import platform

    import torch

    from .. import __version__
    from ..campaign.audit import PROBES
    from ..registry import audit_fingerprint

    machine = f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    if device.startswith("cuda") and torch.cuda.is_available():
        machine += f", {torch.cuda.get_device_name(0)}"
    from ..defences.specs import parse_all

    defences = sorted({s.name for s, _ in parse_all(args.defence)}) if getattr(args, "defence", None) else []
    return {"medfool": __version__, "code_sha256": audit_fingerprint(sorted({PROBES[p].attack for p in probes}), defences),
            "machine": machine, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "device": device, "date": date,
            "command": getattr(args, "command_line", "medfool audit")}


def run_audit_command(args: argparse.Namespace) -> int:
    from ..campaign.audit import BATTERY, L2_BUDGETS, LINF_BUDGETS, PROBES
    from ..reports.audit import schema

    if args.schema:
        print(json.dumps(schema(), indent=2))
        return 0
    if args.data is None or args.out is None:
        raise UsageError("--data and --out are required (or --schema)")
    probes = [p.strip() for p in args.attacks.split(",") if p.strip()] if args.attacks else [p.id for p in BATTERY]
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        raise UsageError(f"--attacks {', '.join(unknown)}: unknown; the battery is {', '.join(PROBES)}")
    linf = parse_budgets(args.budgets, LINF_BUDGETS, 255)
    l2 = parse_budgets(args.l2_budgets, L2_BUDGETS, 1)
    gates = parse_gates(args.fail_under, probes, linf)
    overrides = _overrides(args.set, probes)
    if args.max_tiles is not None and args.max_tiles < 1:
        raise UsageError("--max-tiles must be >= 1")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    from ..defences.specs import DefenceError, parse_all

    try:
        chain = parse_all(args.defence)  # every bad --defence at once, before any model is loaded
    except DefenceError as exc:
        raise UsageError(str(exc)) from None
    detectors = [s.name for s, _ in chain if s.kind == "detection"]
    if detectors:
        raise UsageError(f"--defence {', '.join(detectors)}: a detector flags tiles instead of transforming them; "
                         f"run it with medfool defend detect --defence {detectors[0]}")
    if not 1 <= args.eot_draws <= 64:
        raise UsageError(f"--eot-draws {args.eot_draws}: must be between 1 and 64")
    if not 1 <= args.validity_tiles <= 1000:
        raise UsageError(f"--validity-tiles {args.validity_tiles}: must be between 1 and 1000")
    if args.endpoint and args.defence:
        raise UsageError("--defence cannot be combined with --endpoint: a served model is audited as it is served "
                         "(put the defence in front of the model on the server, e.g. medfool serve)")
    if args.endpoint:  # --- blackbox: a served model, the query-only battery ---
        from ..campaign.audit import LABEL_ONLY, QUERY_BATTERY

        if not args.attacks:
            probes = [p.id for p in QUERY_BATTERY if args.output == "scores" or p.id in LABEL_ONLY]
        if args.dry_run:
            from ..targets.endpoint import dry_run_estimate

            per_tile = sum(PROBES[p].params.get("max_queries", 1000) * (1 if PROBES[p].budget is None else
                           len(linf if PROBES[p].norm == "linf" else l2)) for p in probes)
            tiles = min(args.max_tiles or 16, 16)
            est = dry_run_estimate(per_tile * tiles + 8 * tiles, 16, args.rate_limit, args.concurrency)
            print(f"dry run: at most {est['queries']} queries in {est['requests']} requests to {args.endpoint}; "
                  f"{est['seconds']:.0f} s at {args.rate_limit:g} requests/s; nothing sent")
            return 0
    engine = engine_from(args)
    log = None
    if args.endpoint:  # every request, retries included, goes into the run's results store as it is answered
        from ..campaign.querylog import QueryLog

        log = QueryLog(Path(args.out))
    try:
        return _audit(args, engine, log, probes, linf, l2, gates, overrides)
    finally:
        if log is not None:
            log.close()


def _audit(args: argparse.Namespace, engine: Any, log: Any, probes: list[str], linf: list[float], l2: list[float],
           gates: Any, overrides: Any) -> int:
    from ..campaign.audit import NonFiniteOutputs
    from ..campaign.store import ResultsStore
    from ..inputs.datasets import DataError, load_dataset
    from ..reports.audit import build_report
    from ..reports.audit_output import write_audit

    target = _endpoint_target(args, log) if args.endpoint else _target(args)
    try:
        data = load_dataset(args.data, target.classes, max_tiles=args.max_tiles)
    except DataError as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out)
    store = ResultsStore(out)
    from ..targets.precision import mode_name

    mode = mode_name(target.precision, target.channels_last, target.compiled)
    mode = "" if mode == "float32" else f" ({mode})"
    print(f"auditing {target.name}{mode} on {len(data.items)} tiles ({len(data.skipped)} skipped) with {', '.join(probes)}", file=sys.stderr)
    for line in getattr(target, "warnings", []):
        print(f"warning: {line}", file=sys.stderr)
    if args.defence:
        print(f"defence: {' -> '.join(args.defence)} (adaptive battery, then the plain one, then the model alone)", file=sys.stderr)
    from ..campaign.defended import audit_with_validity

    try:
        audited = audit_with_validity(data.items, target, store, defences=args.defence, draws=args.eot_draws,
                                      validity_tiles=args.validity_tiles, probes=probes, linf=linf, l2=l2, overrides=overrides,
                                      batch_size=args.batch_size, resume=args.resume, engine=engine)
    except NonFiniteOutputs as exc:
        raise UsageError(f"--model {args.model}: {exc}") from None
    finally:
        getattr(engine, "shutdown", lambda: None)()
    target, plan = audited.adaptive
    plans = [plan] + [pair[1] for pair in (audited.plain, audited.undefended) if pair is not None]
    failures = [f for pl in plans for run in pl.runs for f in run.failures]
    for f in failures:
        if f.kind == "invalid":
            raise UsageError(f"{f.attack} ({f.label}): {f.error}")
    if failures:
        raise RunFailed(f"{len(failures)} unit(s) failed; first: {failures[0].attack} ({failures[0].label}): {failures[0].error.splitlines()[0]}")
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    report = build_report(store, plan, target, data, device=str(target.device), date=date, engine=engine.name)
    report.provenance = _provenance(args, probes, str(target.device), date)
    report.warnings = list(getattr(target, "warnings", []))
    from ..reports.audit_schema import ValidityCheck

    report.validity = [ValidityCheck(**vars(c)) for c in audited.checks]
    if log is not None:
        from ..campaign.querylog import summary
        from ..reports.audit_schema import QueryTraffic

        traffic = summary(out)
        report.queries = QueryTraffic(**traffic) if traffic else None
    report.unreliable = any(c.passed is False for c in audited.checks)
    if audited.plain is not None and audited.undefended is not None:
        from ..reports.defence import defence_section

        plain = build_report(store, audited.plain[1], audited.plain[0], data, device=str(target.device), date=date, engine=engine.name)
        base = build_report(store, audited.undefended[1], audited.undefended[0], data, device=str(target.device), date=date,
                            engine=engine.name)
        report.defence, report.residual_risk = defence_section(report, plain, base, target)
    checked = check_gates(report.model_dump(mode="json"), gates)
    doc = write_audit(report, store, plan, target, out, checked)
    print_headline(doc)
    if doc.get("defence"):
        d = doc["defence"]
        for part in d.get("splits", []):
            print(f"defence on the {part['tiles']} {part['name']} tiles: clean accuracy {part['clean_accuracy_undefended']:.1%} -> "
                  f"{part['clean_accuracy_defended']:.1%}; " + ", ".join(
                      f"{b['eps_255']:g}/255: undefended {b['undefended']:.1%}, adaptive {b['adaptive']:.1%}, non-adaptive {b['non_adaptive']:.1%}"
                      for b in part["budgets"]))
        print(f"defence {' -> '.join(d['chain'])}: clean accuracy {d['clean_accuracy_undefended']:.1%} -> {d['clean_accuracy_defended']:.1%}; "
              + ", ".join(f"{b['eps_255']:g}/255: undefended {b['undefended']:.1%}, adaptive {b['adaptive']:.1%}, non-adaptive {b['non_adaptive']:.1%}"
                          for b in d["budgets"]))
    for c in doc.get("validity", []):
        if c["passed"] is False:
            print(f"UNRELIABLE: validity check failed: {c['title']} ({c['measured']})", file=sys.stderr)
    if doc.get("queries"):
        q = doc["queries"]
        print(f"endpoint: {q['requests']} requests ({q['images_answered']} images answered, {q['retries']} retries), "
              f"median latency {q['latency_median_s']:.3f} s; logged in {out}/results.sqlite (table queries)")
    print(f"wrote {out}/report.json, {out}/report.html")
    failed = [g for g in checked if not g["passed"]]
    for g in failed:
        measured = "not measured" if g["measured"] is None else f"{g['measured']:.1%}"
        why = "; the figure is unreliable (a validity check failed)" if g.get("unreliable") else ""
        print(f"gate failed: {g['gate']} (measured {measured}{why})", file=sys.stderr)
    return 3 if failed else 0


def print_headline(doc: dict[str, Any]) -> None:
    """Clean accuracy and the worst case, each with n and its 95% interval: held-out tiles first where there is a split."""
    from ..reports.intervals import fmt_ci

    parts = [(f"{s['name']} tiles", s["ci"].get("clean_accuracy"), s["worst_case"]) for s in doc.get("splits", [])]
    parts.append(("all tiles", doc["data"].get("clean_accuracy_ci"), doc["worst_case"]))
    for name, clean, worst in parts:
        print(f"{name}: clean accuracy {fmt_ci(clean)}")
        for w in worst:
            ci = w["ci"]
            line = f"  worst case at {w['eps_255']:g}/255: accuracy {fmt_ci(ci.get('robust_accuracy'))}"
            if ci.get("missed_tumour_rate"):
                line += f"; missed tumour {fmt_ci(ci['missed_tumour_rate'], 0)}"
            print(line)
    errors = doc.get("model_errors", {})
    if errors.get("count"):
        print(f"model errors (NaN/inf outputs, left out of every rate): {errors['count']} tile(s); clean pass: {len(errors['clean'])}; "
              + ", ".join(f"{k}: {v}" for k, v in errors["by_attack"].items()))


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("audit", help="audit a tile classifier on labelled tiles: attack battery, worst case, tumour-decision flips, report")
    p.add_argument("--data", help="a folder with one folder of tiles per class, a labels.csv (path,label), or 'sample' (the shipped tiles)")
    p.add_argument("--out", help="output folder: report.json, report.html, figures/, results.sqlite")
    p.add_argument("--model", default="reference", help="'reference' (default) or path/to/file.py:factory (your code, imported)")
    p.add_argument("--weights", help=".safetensors, or a state dict torch reads with weights_only=True")
    p.add_argument("--config", help="model.yaml: classes in logit order, tumour classes, input size/policy, mean/std, mpp, output")
    p.add_argument("--attacks", help="comma-separated battery ids (default: all of them)")
    p.add_argument("--budgets", help="L-inf budgets in /255, comma-separated (default 1,2,4,8)")
    p.add_argument("--l2-budgets", help="L2 budgets, comma-separated (default 0.5,1,2)")
    p.add_argument("--max-tiles", type=int, help="audit at most N tiles, taken class by class in turn (a quick look)")
    p.add_argument("--batch-size", type=int, default=32, help="tiles per unit (default 32)")
    p.add_argument("--set", action="append", metavar="ATTACK.PARAM=VALUE", help="override a parameter, e.g. apgd-ce.steps=20")
    p.add_argument("--fail-under", action="append", metavar="NAME@EPS=VALUE",
                   help="exit 3 when robust accuracy is below VALUE, e.g. worst_case@4/255=0.60 or pgd@8/255=0.5 (repeatable)")
    p.add_argument("--device", help="torch device (default: cuda when available)")
    p.add_argument("--precision", choices=("float32", "bf16"), default="float32",
                   help="bf16: the attacks' gradient passes under bfloat16 autocast, every reported prediction still in float32 "
                        "(measured on 2 CPU cores with AVX512-BF16: 1.39x on the reference model, 1.05x on a ResNet-50, 0.72x "
                        "on a ViT-S/16; not measured on a GPU; see the Benchmarks page)")
    p.add_argument("--channels-last", action="store_true",
                   help="channels-last memory for convolutional models (2 CPU cores: 1.45x on the reference model, 1.11x on a ResNet-50)")
    p.add_argument("--compile", action="store_true",
                   help="experimental: the model through torch.compile (inductor; a C++ compiler on the CPU). Measured on 2 CPU "
                        "cores: 1.3x on a fixed-shape ResNet-50 PGD loop after 30-40 s of compilation, but 0.5x through a "
                        "16-tile audit, where each new batch shape recompiles (see the Benchmarks page)")
    p.add_argument("--defence", action="append", metavar="NAME[:KEY=VALUE,...]",
                   help="audit the model behind this defence (repeatable: applied in order), e.g. stain-norm or jpeg:quality=75; "
                        "adaptively (BPDA/EOT), beside the plain evaluation and the model alone. Known: jpeg, bit-depth, median, "
                        "stain-norm, resize-pad (detectors: medfool defend detect)")
    p.add_argument("--eot-draws", type=int, default=8, help="EOT draws per attack step for a randomised defence (default 8)")
    p.add_argument("--validity-tiles", type=int, default=16,
                   help="tiles the evaluation-validity checks run on (default 16: the first correctly classified ones)")
    p.add_argument("--resume", action="store_true", help="continue from the output folder's results store")
    add_engine_options(p)
    p.add_argument("--endpoint", help="audit a served model instead: http(s)://HOST:PORT/v2/models/NAME (Open Inference Protocol)")
    p.add_argument("--output", choices=("scores", "label"), default="scores", help="with --endpoint: use scores, or the label only")
    p.add_argument("--token-env", help="with --endpoint: the environment variable holding a bearer token (never written)")
    p.add_argument("--rate-limit", type=float, default=20.0, help="with --endpoint: requests per second (default 20)")
    p.add_argument("--concurrency", type=int, default=2, help="with --endpoint: requests in flight (default 2)")
    p.add_argument("--timeout", type=float, default=30.0, help="with --endpoint: seconds per request (default 30)")
    p.add_argument("--total-queries", type=int, help="with --endpoint: stop before sending more images than this")
    p.add_argument("--insecure", action="store_true", help="with --endpoint: do not verify TLS certificates")
    p.add_argument("--dry-run", action="store_true", help="with --endpoint: print the planned queries and time, send nothing")
    p.add_argument("--schema", action="store_true", help="print the report's JSON Schema and exit")
    p.set_defaults(func=run_audit_command)
