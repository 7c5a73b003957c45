"""Side-by-side runs of medfool's reference attacks and the same attacks in torchattacks, Foolbox and ART.

One process, one reference model, the same initially-correct sample tiles, the same device and the
same budgets. Every row gives wall time (median of ``repeats`` after one warm-up run), the ratio
peer / ours, and the quality beside it: success rate on the tiles, median L2 and L-inf norms of the
perturbation, and the images that went through the model forward and backward. For the gradient
attacks the "floor" is the time of the bare forward+backward passes the attack needs.

Our side runs through the campaign core's :func:`run_attack`, the same call the command line and
``medfool results`` make. The peers are imported here only: medfool itself never depends on them.
"""

from __future__ import annotations

import gc
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medfool_ref.attacks.backdoor import apply_trigger, make_trigger
from medfool_ref.attacks.eot import expected_success
from medfool_ref.attacks.patch import placement_success, train_patch
from medfool_ref.attacks.transforms import TransformConfig
from medfool_ref.campaign.execute import run_attack


class Counter(nn.Module):
    """Counts the images each peer pushes through the model, with and without autograd."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_images = 0
        self.grad_images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.grad_images += x.shape[0]
        else:
            self.forward_images += x.shape[0]
        return self.model(x)

    def reset(self) -> None:
        self.forward_images = self.grad_images = 0


@dataclass
class Row:
    attack: str
    implementation: str
    seconds: float
    repeats: int
    success_rate: float | None = None
    median_l2: float | None = None
    median_linf: float | None = None
    forward_images: int | None = None
    backward_images: int | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    peak_mb: float | None = None  # memory above the start during one call (CUDA allocator, or resident set on the CPU)
    images: int | None = None  # tiles attacked in one call (images per second = images / seconds)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.update(d.pop("extra"))
        d["images_per_s"] = round(self.images / self.seconds, 2) if self.images and self.seconds > 0 else None
        return d


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the resident set may then start above what is live
        pass


class PeakMemory:
    """Peak memory above the start while the block runs: CUDA's allocator peak on a GPU, else the process's resident
    set sampled every 2 ms by a thread (Linux ``/proc``), after glibc's ``malloc_trim`` has returned freed pages
    (without it, memory an earlier row freed stays resident and hides a later row's use). In MiB, in ``self.mb``."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.mb = device, 0.0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.type != "cuda":
            _trim()  # hand freed heap pages back, so that the resident set starts near what is live
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._base, self._peak = _rss_mb(), 0.0
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_mb())
            self._stop.wait(0.002)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.mb = max(0.0, max(self._peak, _rss_mb()) - self._base)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls after ``warmup`` calls; returns (seconds, last output). The peak memory
    of the first timed call (above what was held before it) is left in ``timed.peak_mb``."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    gc.collect()
    for i in range(repeats):
        sync(device)
        with PeakMemory(device) as peak:
            t = time.perf_counter()
            out = fn()
            sync(device)
            times.append(time.perf_counter() - t)
        if i == 0:
            timed.peak_mb = round(peak.mb, 1)
    return statistics.median(times), out


timed.peak_mb = None  # type: ignore[attr-defined]


@torch.no_grad()
def quality(model: nn.Module, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor | np.ndarray) -> dict[str, float]:
    adv_t = torch.as_tensor(adv, dtype=x.dtype, device=x.device)
    fooled = model(adv_t).argmax(1) != y
    d = (adv_t - x).flatten(1)
    return {"success_rate": float(fooled.float().mean()),
            "median_l2": float(d.norm(dim=1)[fooled].median()) if fooled.any() else None,
            "median_linf": float(d.abs().amax(dim=1)[fooled].median()) if fooled.any() else None}


def art_classifier(model: nn.Module, x: torch.Tensor, n_classes: int, preprocessing: Any = None) -> Any:
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=n_classes,
                             clip_values=(0.0, 1.0), device_type="gpu" if x.is_cuda else "cpu",
                             preprocessing_defences=preprocessing)


def floor_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, passes: int, device: torch.device, repeats: int) -> float:
    """The bare forward+backward passes (w.r.t. the input) a gradient attack of ``passes`` steps needs."""

    def run() -> None:
        for _ in range(passes):
            xa = x.clone().requires_grad_(True)
            loss = F.cross_entropy(model(xa), y)
            torch.autograd.grad(loss, xa)

    seconds = timed(run, device, repeats)[0]
    floor_seconds.peak_mb = timed.peak_mb  # type: ignore[attr-defined]
    return seconds


def floor_row(name: str, impl: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, passes: int, device: torch.device,
              repeats: int) -> Row:
    seconds = floor_seconds(model, x, y, passes, device, repeats)
    return Row(name, impl, seconds, repeats, peak_mb=floor_seconds.peak_mb, images=x.shape[0])  # type: ignore[attr-defined]


def _peer_rows(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, repeats: int,
               runners: dict[str, Callable[[], Any]], counter: Counter) -> list[Row]:
    rows = []
    for impl, run in runners.items():
        counter.reset()
        seconds, adv = timed(run, device, repeats)
        calls = repeats + 1
        q = quality(model, x, y, adv)
        rows.append(Row(name, impl, seconds, repeats, q["success_rate"], q["median_l2"], q["median_linf"],
                        counter.forward_images // calls, counter.grad_images // calls, peak_mb=timed.peak_mb, images=x.shape[0]))
    return rows


def _ours(name: str, run: Callable[[], Any], model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
          repeats: int, impl: str = "medfool", note: str = "") -> Row:
    seconds, r = timed(run, device, repeats)
    q = quality(model, x, y, r.adversarial)
    return Row(name, impl, seconds, repeats, q["success_rate"], q["median_l2"], q["median_linf"],
               r.forward_images, r.backward_images, note, peak_mb=timed.peak_mb, images=x.shape[0])


def bench_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, repeats: int, eps: float = 8 / 255) -> list[Row]:
    import foolbox as fb
    import torchattacks
    from art.attacks.evasion import FastGradientMethod

    counter = Counter(model).eval()
    ta = torchattacks.FGSM(counter, eps=eps)
    fmodel = fb.PyTorchModel(counter, bounds=(0, 1), device=device)
    fa = fb.attacks.FGSM()
    art_fgm = FastGradientMethod(art_classifier(counter, x, 9), eps=eps, norm=np.inf, batch_size=x.shape[0])
    rows = [_ours("FGSM", lambda: run_attack("fgsm", model, x, y, params={"eps": eps}), model, x, y, device, repeats)]
    rows += _peer_rows("FGSM", model, x, y, device, repeats, {
        "torchattacks": lambda: ta(x, y),
        "foolbox": lambda: fa(fmodel, x, y, epsilons=eps)[1],
        "art": lambda: art_fgm.generate(x.cpu().numpy(), y=y.cpu().numpy()),
    }, counter)
    rows.append(floor_row("FGSM", "floor (1 forward+backward)", model, x, y, 1, device, repeats))
    return rows


def bench_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, repeats: int, eps: float = 8 / 255,
              steps: int = 10, step: float = 2 / 255) -> list[Row]:
    import foolbox as fb
    import torchattacks
    from art.attacks.evasion import ProjectedGradientDescentPyTorch

    counter = Counter(model).eval()
    ta = torchattacks.PGD(counter, eps=eps, alpha=step, steps=steps, random_start=True)
    fmodel = fb.PyTorchModel(counter, bounds=(0, 1), device=device)
    fa = fb.attacks.LinfPGD(abs_stepsize=step, steps=steps, random_start=True)
    art_pgd = ProjectedGradientDescentPyTorch(art_classifier(counter, x, 9), norm=np.inf, eps=eps, eps_step=step, max_iter=steps,
                                              num_random_init=1, batch_size=x.shape[0], verbose=False)
    rows = [
        _ours("PGD", lambda: run_attack("pgd", model, x, y, params={"eps": eps, "steps": steps, "step_size": step}), model, x, y, device, repeats,
              note="sample-wise early stopping (default)"),
        _ours("PGD", lambda: run_attack("pgd", model, x, y, params={"eps": eps, "steps": steps, "step_size": step, "early_stop": False}), model, x, y, device,
              repeats, impl="medfool (early_stop=False)", note="every step on every tile, as the peers do"),
    ]
    rows += _peer_rows("PGD", model, x, y, device, repeats, {
        "torchattacks": lambda: ta(x, y),
        "foolbox": lambda: fa(fmodel, x, y, epsilons=eps)[1],
        "art": lambda: art_pgd.generate(x.cpu().numpy(), y=y.cpu().numpy()),
    }, counter)
    rows.append(floor_row("PGD", f"floor ({steps} forward+backward)", model, x, y, steps, device, repeats))
    return rows


def bench_deepfool(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, repeats: int,
                   steps: int = 50, overshoot: float = 0.02) -> list[Row]:
    import foolbox as fb
    import torchattacks
    from art.attacks.evasion import DeepFool

    counter = Counter(model).eval()
    ta = torchattacks.DeepFool(counter, steps=steps, overshoot=overshoot)
    fmodel = fb.PyTorchModel(counter, bounds=(0, 1), device=device)
    fa = fb.attacks.L2DeepFoolAttack(steps=steps, overshoot=overshoot, candidates=None)
    art_df = DeepFool(art_classifier(counter, x, 9), max_iter=steps, epsilon=overshoot, nb_grads=9, batch_size=x.shape[0],
                      verbose=False)
    rows = [_ours("DeepFool", lambda: run_attack("deepfool", model, x, y, params={"overshoot": overshoot, "max_iter": steps,
                                                                                 "round_to_8bit": False}),
                  model, x, y, device, repeats, note="float solution, as the peers give (the command line rounds onto 8 bits)"),
            _ours("DeepFool", lambda: run_attack("deepfool", model, x, y, params={"overshoot": overshoot, "max_iter": steps,
                                                                                 "round_to_8bit": False, "class_chunk": 3}),
                  model, x, y, device, repeats, impl="medfool (class_chunk=3)",
                  note="the 9 class gradients 3 at a time: a third of the gradient memory, the same solution")]
    rows += _peer_rows("DeepFool", model, x, y, device, repeats, {
        "torchattacks": lambda: ta(x, y),
        "foolbox": lambda: fa(fmodel, x, y, epsilons=None)[1],
        "art": lambda: art_df.generate(x.cpu().numpy()),
    }, counter)
    return rows


def bench_one_pixel(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, repeats: int,
                    population: int = 400, generations: int = 5) -> list[Row]:
    """ART's PixelAttack fixes its population at 400 (400 // 5 parameters x 5); the others are set to match."""
    import torchattacks
    from art.attacks.evasion import PixelAttack

    counter = Counter(model).eval()
    ta = torchattacks.OnePixel(counter, pixels=1, steps=generations, popsize=population, inf_batch=population)
    art_px = PixelAttack(art_classifier(counter, x, 9), th=1, es=1, max_iter=generations, verbose=False)
    rows = [_ours("one-pixel", lambda: run_attack("one-pixel", model, x, y, params={"pixels": 1, "population": population,
                                                                                "generations": generations}),
                  model, x, y, device, repeats)]
    rows += _peer_rows("one-pixel", model, x, y, device, repeats, {
        "torchattacks": lambda: ta(x, y),
        "art": lambda: art_px.generate(x.cpu().numpy()),
    }, counter)
    for r in rows:
        r.extra["population"], r.extra["generations"] = population, generations
    return rows


def bench_patch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, repeats: int, *, target: int,
                steps: int = 20, area: float = 0.1) -> list[Row]:
    """Time per optimisation step over the same batch; quality is the target rate under fresh placements.

    ART's ``AdversarialPatchPyTorch`` needs torchvision; where none matches the installed torch (the
    CPU build here) ART's own ``AdversarialPatchNumpy`` is run instead and the row says so.
    """
    xs = x[y != target]
    side = xs.shape[-1]
    res = max(int(round(side * area ** 0.5)), 4)
    clf = art_classifier(model, xs, 9)
    onehot = np.eye(9, dtype=np.float32)[np.full(xs.shape[0], target)]
    try:
        from art.attacks.evasion import AdversarialPatchPyTorch

        art_patch = AdversarialPatchPyTorch(clf, rotation_max=0.0, scale_min=area ** 0.5, scale_max=area ** 0.5,
                                            distortion_scale_max=0.0, learning_rate=0.05, max_iter=steps, batch_size=xs.shape[0],
                                            patch_shape=(3, res, res), patch_type="square", optimizer="Adam", targeted=True,
                                            verbose=False)
        art_name, scale = "art (AdversarialPatchPyTorch)", area ** 0.5
    except ImportError:
        from art.attacks.evasion import AdversarialPatchNumpy

        class _PatchNumpy(AdversarialPatchNumpy):  # ART 1.20.1 rejects its own numpy-scalar mean value
            def reset_patch(self, initial_patch_value: Any) -> None:
                if initial_patch_value is not None and np.ndim(initial_patch_value) == 0:
                    initial_patch_value = float(initial_patch_value)
                super().reset_patch(initial_patch_value)

        scale = (4 * area / np.pi) ** 0.5  # a circular patch of the same area
        art_patch = _PatchNumpy(clf, target=target, rotation_max=0.0, scale_min=scale, scale_max=scale,
                                          learning_rate=5.0, max_iter=steps, batch_size=xs.shape[0], targeted=True, verbose=False)
        art_name = "art (AdversarialPatchNumpy; no torchvision for this torch)"
    # equal settings: ART's placement (fixed scale, no rotation) for training and evaluation alike
    same = {"scale_jitter": 0.0, "max_rotation_deg": 0.0}
    t_ours, (patch, _, _) = timed(lambda: train_patch(model, xs, target=target, area=area, steps=steps, resolution=res, **same),
                                  device, repeats)
    ours_rate = placement_success(model, xs, patch, target=target, area=area, draws=8, **same)["adversarial"]
    t_path, (p_path, _, _) = timed(lambda: train_patch(model, xs, target=target, area=area, steps=steps, resolution=res), device, 1)
    path_rate = placement_success(model, xs, p_path, target=target, area=area, draws=8)["adversarial"]
    t_art, _ = timed(lambda: art_patch.generate(xs.cpu().numpy(), y=onehot), device, repeats)
    with torch.no_grad():
        patched = torch.as_tensor(art_patch.apply_patch(xs.cpu().numpy(), scale=scale), device=device, dtype=xs.dtype)
        art_rate = float((model(patched).argmax(1) == target).float().mean())
    extra = {"steps": steps, "tiles": int(xs.shape[0]), "area": area}
    floor = floor_seconds(model, xs, y[y != target], 1, device, repeats)
    note = f"seconds per step; {steps} steps; target NORM; fixed scale, no rotation (ART's placement), trained and evaluated"
    return [Row("patch", "medfool", t_ours / steps, repeats, float(ours_rate), note=note, extra=extra),
            Row("patch", art_name, t_art / steps, repeats, art_rate, note=note, extra=extra),
            Row("patch", "medfool (pathology placement: any rotation, scale +-20%)", t_path / steps, 1, float(path_rate),
                note=f"seconds per step; {steps} steps; trained and evaluated under medfool's default placement", extra=extra),
            Row("patch", "floor (1 forward+backward)", floor, repeats, note="seconds per step")]


def bench_eot(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, repeats: int, *, eps: float = 8 / 255,
              steps: int = 10, samples: int = 8, degrees: float = 10.0, noise: float = 0.02) -> list[Row]:
    """ART's PGD with an EoT preprocessor against ours with the same distribution and draws per step.

    The distribution is small rotations where torchvision (needed by ART's rotation EoT) is
    installed, and Gaussian sensor noise otherwise; ours also runs its full pathology distribution.
    """
    from art.attacks.evasion import ProjectedGradientDescentPyTorch

    try:
        import torchvision  # noqa: F401
        from art.preprocessing.expectation_over_transformation import EoTImageRotationPyTorch

        eotp = EoTImageRotationPyTorch(nb_samples=samples, clip_values=(0.0, 1.0), angles=degrees)
        same = TransformConfig(dihedral=False, max_rotation_deg=degrees, scale_range=(1.0, 1.0), max_shift=0.0, stain_scale=0.0,
                               stain_shift=0.0, max_blur_sigma=0.0, max_noise=0.0)
        what = f"rotation up to {degrees:g} degrees"
    except ImportError:
        from art.preprocessing.expectation_over_transformation import EoTGaussianNoisePyTorch

        eotp = EoTGaussianNoisePyTorch(nb_samples=samples, clip_values=(0.0, 1.0), std=(0.0, noise))
        same = TransformConfig(dihedral=False, max_rotation_deg=0.0, scale_range=(1.0, 1.0), max_shift=0.0, stain_scale=0.0,
                               stain_shift=0.0, max_blur_sigma=0.0, max_noise=noise)
        what = f"Gaussian noise, std up to {noise:g}"
    step = 2.5 * eps / steps
    art_pgd = ProjectedGradientDescentPyTorch(art_classifier(model, x, 9, preprocessing=[eotp]), norm=np.inf, eps=eps,
                                              eps_step=step, max_iter=steps, num_random_init=1, batch_size=x.shape[0],
                                              verbose=False)
    note = f"seconds per step; success = mean over 32 held-out draws of {what}"
    rows = []
    for impl, cfg in ((f"medfool ({what})", same), ("medfool (full pathology distribution)", TransformConfig())):
        params = {"eps": eps, "steps": steps, "samples": samples, "step_size": step, "transforms": cfg, "random_start": True,
                  "eval_draws": 1}
        t, r = timed(lambda: run_attack("eot", model, x, y, params=params), device, repeats)
        rate = expected_success(model, r.adversarial, y, config=same, draws=32)
        rows.append(Row("EOT", impl, t / steps, repeats, float(rate.mean()), note=note))
    t, adv = timed(lambda: art_pgd.generate(x.cpu().numpy(), y=y.cpu().numpy()), device, repeats)
    rate = expected_success(model, torch.as_tensor(adv, device=device), y, config=same, draws=32)
    rows.append(Row("EOT", f"art ({type(eotp).__name__} + PGD)", t / steps, repeats, float(rate.mean()), note=note))
    rep, yrep = x.repeat_interleave(samples, 0), y.repeat_interleave(samples)
    rows.append(Row("EOT", f"floor (1 forward+backward of {samples} draws x {x.shape[0]} tiles)",
                    floor_seconds(model, rep, yrep, 1, device, repeats), repeats, note="seconds per step"))
    for r in rows:
        r.extra.update({"steps": steps, "samples": samples})
    return rows


def bench_backdoor(x: torch.Tensor, repeats: int, *, target: int, n: int = 512) -> list[Row]:
    """Poisoning throughput: stamp a trigger and relabel n tiles (ours on tensors, ART on numpy arrays)."""
    from art.attacks.poisoning import PoisoningAttackBackdoor
    from art.attacks.poisoning.perturbations import add_pattern_bd

    reps = (n + x.shape[0] - 1) // x.shape[0]
    xs = x.repeat(reps, 1, 1, 1)[:n]
    colour, alpha = make_trigger("pixel-pattern", 3)
    colour, alpha = colour.to(x.device), alpha.to(x.device)
    device = x.device
    t_ours, _ = timed(lambda: (apply_trigger(xs, colour, alpha), torch.full((n,), target, device=device)), device, repeats)
    xn = xs.cpu().numpy()
    attack = PoisoningAttackBackdoor(lambda a: add_pattern_bd(a, channels_first=True))
    onehot = np.eye(9, dtype=np.float32)[np.full(n, target)]
    t_art, _ = timed(lambda: attack.poison(xn, y=onehot), device, repeats)
    return [Row("BadNets poisoning", "medfool", t_ours, repeats, note=f"{n} tiles; {n / t_ours:,.0f} tiles/s", extra={"tiles": n}),
            Row("BadNets poisoning", "art", t_art, repeats, note=f"{n} tiles; {n / t_art:,.0f} tiles/s", extra={"tiles": n})]
