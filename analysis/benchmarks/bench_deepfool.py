"""DeepFool: boundgeo against foolbox and ART on the same MNIST CNN and the same 500 images.

    python analysis/benchmarks/bench_deepfool.py [--data-dir data/mnist] [--n 500]

Setup: the reference MNIST CNN (trained on the first 8,000 images of the MNIST test split) and
the first 500 correctly classified images of the last 2,000. Every library gets the same
settings (50 steps, 10 candidates, overshoot 0.02, clipping to [0, 1]) and runs at its own best
setting of torch threads and batch size: each (threads, batch) of SWEEP is timed once on the first
``--sweep-n`` images (all 500 by default), per library and norm, and the fastest is kept ("setting"
in each row, the sweep in "sweeps"). Every library is then timed best of ``--repeats`` (5) at that
setting. The timings cover the attack call only: success (the prediction changed, and the library
reported success where it reports it) is checked afterwards, the same way for every library.

boundgeo also runs with ``nearest=None`` (every candidate at every step) and ``nearest=1`` (every
candidate at the first step, only the class chosen there afterwards; the default keeps 3), with
``box_step=True`` (each linearised step solved inside [0, 1] instead of clipped after it),
``box_step="after_first"`` (the first step clipped, the later ones solved; also with ``nearest=1``),
and with ``refine=1`` (one round of tangent-plane projection after the crossing, the idea of
SuperDeepFool) after each of the default, ``"after_first"`` and ``True``. ``fewer_candidates``
then runs boundgeo's default, ``box_step=True, refine=1`` and foolbox with only the top k classes
by clean logit (k in CANDIDATES), each at its 10-candidate setting ("candidates" in the JSON); on
the CIFAR ResNet ``candidates=4`` runs beside foolbox at 4 too. For boundgeo's rows the "floor" is
the least time the iterations it made can take on this machine: its batches replayed as plain
``model(x)`` and ``torch.autograd.grad`` calls, one forward per iterate of the inputs still active
and the gradient rows of that step, at the row's threads and batch, plus the refinement's rows
(one forward and one gradient each) at the row's batch (``autograd_floor``); ``ratio_to_floor``
is its time over that. ``first_step_floor`` times DeepFool's first step alone the same way (one
forward at x and a gradient row for each of the 9 other candidate classes, at the fastest setting
of the sweep): no DeepFool that weighs every candidate at x can take less time per image.

Per library it reports the success rate, the median and mean ‖r‖, the paired per-image ratio of
‖r‖ to boundgeo's, the seconds per image, and the forward and backward passes through the model
(counted with module hooks, in a second, untimed run so the hooks cost the timings nothing),
plus where boundgeo's time goes (forward, backward, the rest). Results go to
analysis/results/bench_deepfool.json, with the top-level "environment" (analysis/_environment.py).
``other_models`` then puts boundgeo's ratio to the floor, and its time against foolbox's, on two
larger networks: the CIFAR-10 ResNet of analysis/cifar10.py (200 held-out images, ℓ2 and ℓ∞) and
torchvision's ResNet-50 with RANDOM weights at 224x224 (4 images, ℓ2; timing only). ``--skip-models``
leaves it out.
``--quick``: 50 images, a sweep on 20, 20 and 2 images for the other models, into analysis/results/quick/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import boundgeo as bg
from boundgeo import zoo

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "analysis"))
sys.path.insert(0, str(ROOT / "analysis" / "benchmarks"))
from _environment import environment, finish  # noqa: E402

SWEEP = ((1, 32), (1, 128), (1, 500), (2, 32), (2, 128), (2, 500))  # (torch threads, batch size)
SETTINGS = dict(steps=50, candidates=10, overshoot=0.02)


class PassCounter:
    """Counts (and times) forward and backward passes of a module with hooks.

    ``forward``/``backward`` count calls; ``forward_rows``/``backward_rows`` count samples
    (a backward row is one vector-Jacobian product for one sample).
    """

    def __init__(self, module: nn.Module, timed: bool = False) -> None:
        self.forward = self.backward = self.forward_rows = self.backward_rows = 0
        self.forward_seconds = self.backward_seconds = 0.0
        self._t_f = self._t_b = 0.0
        self.handles = [
            module.register_forward_pre_hook(self._pre_forward),
            module.register_forward_hook(self._post_forward),
            module.register_full_backward_pre_hook(self._pre_backward),
            module.register_full_backward_hook(self._post_backward),
        ]

    def _pre_forward(self, module, inputs):
        self._t_f = time.perf_counter()

    def _post_forward(self, module, inputs, output):
        self.forward_seconds += time.perf_counter() - self._t_f
        self.forward += 1
        self.forward_rows += int(output.shape[0])

    def _pre_backward(self, module, grad_output):
        self._t_b = time.perf_counter()

    def _post_backward(self, module, grad_input, grad_output):
        self.backward_seconds += time.perf_counter() - self._t_b
        self.backward += 1
        self.backward_rows += int(grad_output[0].shape[0])

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)


# Each runner returns (adversarial inputs, the success the library reports or None, boundgeo's
# BoundaryPoints or None) and only runs the attack: verify() checks the predictions afterwards,
# outside the timed region, the same way for every library.
def run_boundgeo(model, x, y, norm, batch, **extra):
    clf = bg.Classifier(model)
    extra = {"candidates": SETTINGS["candidates"], **extra}  # a candidates row says its own
    pts = bg.deepfool(clf, x, norm=norm, overshoot=SETTINGS["overshoot"], max_iter=SETTINGS["steps"],
                      batch_size=batch, **extra)
    return x + pts.perturbation, pts.converged, pts


def run_foolbox(model, x, y, norm, batch, candidates: int = SETTINGS["candidates"]):
    import foolbox as fb

    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    attack = (fb.attacks.L2DeepFoolAttack if norm == "l2" else fb.attacks.LinfDeepFoolAttack)(
        **{**SETTINGS, "candidates": candidates})
    advs, successes = [], []
    for xb, yb in zip(x.split(batch), y.split(batch)):
        _, adv, success = attack(fmodel, xb, yb, epsilons=None)
        advs.append(adv)
        successes.append(success)
    return torch.cat(advs), torch.cat(successes), None


def run_art(model, x, y, norm, batch):
    from art.attacks.evasion import DeepFool
    from art.estimators.classification import PyTorchClassifier

    classifier = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                   nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    attack = DeepFool(classifier, max_iter=SETTINGS["steps"], epsilon=SETTINGS["overshoot"],
                      nb_grads=SETTINGS["candidates"], batch_size=batch, verbose=False)
    return torch.from_numpy(attack.generate(x.numpy())).float(), None, None


def predict(model, adv: torch.Tensor) -> torch.Tensor:
    """The model's class at each of ``adv``, in batches, without gradients."""
    with torch.no_grad():
        return torch.cat([model(b).argmax(1) for b in adv.split(512)])


def verify(model, adv: torch.Tensor, y: torch.Tensor, reported: torch.Tensor | None,
           classes: torch.Tensor | None = None) -> torch.Tensor:
    """Success per input: the model's prediction at ``adv`` (``classes``, when already computed)
    differs from ``y``, and the library reported success, where it reports it. Run after the
    timing, never inside it."""
    changed = (predict(model, adv) if classes is None else classes) != y
    return changed if reported is None else changed & reported.to(changed.device)


def _plain_call(model, inp: torch.Tensor, rows: int, vmapped: bool) -> float:
    """Seconds of one DeepFool iteration as plain torch calls: ``model(x)`` recording the graph,
    then ``rows`` vector-Jacobian products (one batched ``autograd.grad``, or a loop of them)."""
    start = time.perf_counter()
    inp = inp.detach().requires_grad_(True)
    logits = model(inp)
    grad_outputs = torch.zeros(rows, *logits.shape, dtype=logits.dtype)
    grad_outputs[:, :, 0], grad_outputs[:, :, 1] = 1.0, -1.0
    if vmapped:
        torch.autograd.grad(logits, inp, grad_outputs=grad_outputs, is_grads_batched=True)
    else:
        for j in range(rows):
            torch.autograd.grad(logits, inp, grad_outputs=grad_outputs[j], retain_graph=j < rows - 1)
    return time.perf_counter() - start


def _kept(pts) -> int:
    """The candidate classes beside the label that a run weighed at its first step (every model
    here has at least 10 classes, and no run asks for more candidates than that)."""
    return int(pts.settings["candidates"]) - 1


def autograd_floor(model, x, pts, batch: int, threads: int, repeats: int = 3) -> float:
    """Seconds per image of the calls DeepFool cannot avoid for the iterations ``pts`` made.

    The run is replayed batch by batch (``batch`` images, as boundgeo splits them): at forward t
    the inputs still active are those with at least t iterations; each such forward records the
    graph and is followed by the gradient rows of that step (all kept candidates at the first
    step, ``nearest`` later, one for the normals once every active input has crossed). Each call
    is timed as plain torch, batched ``autograd.grad`` and a loop of it, best of ``repeats`` and
    the faster form: nothing of boundgeo's runs, so the floor counts no bookkeeping.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    kept = _kept(pts)
    nearest = pts.settings.get("nearest")
    later = kept if nearest is None else min(nearest, kept)
    total = 0.0
    try:
        for chunk, its in zip(x.split(batch), pts.iterations.cpu().split(batch)):
            for t in range(int(its.max()) + 1):
                active = its >= t
                stepping = bool((its[active] > t).any())
                rows = (kept if t == 0 else later) if stepping else 1
                inp = chunk[active]
                total += min(_plain_call(model, inp, rows, vmapped)
                             for vmapped in (True, False) for _ in range(repeats))
        refined = pts.cost.get("refine_rows", 0)
        if refined:  # one forward and one gradient row each, timed per row at the row's batch
            inp = x[:batch]
            total += refined * min(_plain_call(model, inp, 1, False) for _ in range(repeats)) / len(inp)
    finally:
        torch.set_num_threads(before)
    return total / len(x)


# boundgeo's rows beside its default on the MNIST CNN, and on the other models; each row carries
# its settings as typed (_variant) in "variant", and the MNIST rows in their library name too
# nearest=1: every candidate weighed at the first step, only the class chosen there afterwards (one
# gradient row per later step instead of three, and none wasted on inputs that cross mid-batch)
MNIST_VARIANTS = ({"nearest": None}, {"nearest": 1}, {"box_step": True}, {"box_step": "after_first"},
                  {"box_step": "after_first", "nearest": 1}, {"refine": 1},
                  {"box_step": "after_first", "refine": 1}, {"box_step": True, "refine": 1})
# Fewer candidate classes (the top k by clean logit, the label included: foolbox's ``candidates``,
# ART's ``nb_grads``, the original DeepFool code's ``num_classes``) for boundgeo's default, its
# fastest variant that still refines, and foolbox, each at the setting its 10-candidate row found
CANDIDATES = (2, 3, 4)
CANDIDATE_VARIANTS = ({}, {"box_step": True, "refine": 1})
OTHER_MODEL_VARIANTS = ({}, {"nearest": 1}, {"box_step": "after_first"}, {"box_step": "after_first", "nearest": 1},
                        {"box_step": "after_first", "refine": 1}, {"candidates": 4})  # with fewer candidates foolbox is timed at the same k too
# the batch sizes each library is timed at on the other models (below the set's size, and the
# whole set), at 2 threads: the CIFAR ResNet's and ResNet-50's
CIFAR_BATCHES, RESNET50_BATCHES = (32, 100), (1, 2)
# runs per batch of those sweeps, the best kept: with one, the CIFAR ResNet's l2 default chose batch 32
# in one run (6.1 ms per image) and 100 in the run before (5.4 ms), a timing accident, not a setting
SWEEP_TRIES = 2


def first_step_floor(model, x, repeats: int = 3) -> dict:
    """Seconds per image of DeepFool's first step alone as plain torch calls: one forward at x
    and one gradient row per candidate class but the label (9 of 10), at each (threads, batch)
    of SWEEP, the faster of batched and looped VJPs, best of ``repeats``; the fastest setting.

    Every DeepFool that weighs all candidate classes at x (foolbox's, ART's, boundgeo's at any
    setting) does at least this work, so it bounds the time per image from below on this machine.
    """
    kept = SETTINGS["candidates"] - 1
    best, _ = _fastest_setting(lambda batch: sum(
        min(_plain_call(model, chunk, kept, vmapped) for vmapped in (True, False) for _ in range(repeats))
        for chunk in x.split(batch)))
    return {"seconds": best["seconds"], "torch_threads": best["threads"], "batch_size": best["batch_size"],
            "seconds_per_image": best["seconds"] / len(x), "gradient_rows": kept, "images": len(x),
            "timing": f"best of {repeats} per call, fastest of the sweep"}


def _fastest_setting(seconds_at, settings=SWEEP) -> tuple[dict, list[dict]]:
    """``seconds_at(batch)`` at each (threads, batch) of ``settings``, torch's threads set for each
    call and restored after: the fastest row and all of them (threads, batch_size, seconds)."""
    before = torch.get_num_threads()
    rows = []
    try:
        for threads, batch in settings:
            torch.set_num_threads(threads)
            rows.append({"threads": threads, "batch_size": batch, "seconds": seconds_at(batch)})
    finally:
        torch.set_num_threads(before)
    return min(rows, key=lambda r: r["seconds"]), rows


def _variant(extra: dict) -> str:
    """A variant's settings as typed, e.g. ``box_step="after_first", refine=1``; "default" for none."""
    return ", ".join(f"{k}={v!r}".replace("'", '"') for k, v in extra.items()) or "default"


def other_models(args) -> list[dict]:
    """boundgeo's DeepFool against its autograd floor (and foolbox's time) beyond the MNIST CNN.

    - the CIFAR-10 ResNet of analysis/cifar10.py (trained on part of the CIFAR-10 test split):
      ``--models-n`` correctly classified images of its held-out split, ℓ2 and ℓ∞;
    - torchvision's ResNet-50 with RANDOM weights (batch norm calibrated on 8 other images, as in
      bench_imagenet_scale.py) at 3x224x224 on CIFAR-10 JPEGs upscaled by ``bg.ImageFolder(size=224)``,
      ImageNet mean and std folded into the model: ``--resnet50-n`` images, ℓ2, labels its own
      predictions. It times the machinery only; it says nothing about a trained ResNet-50.

    Each runs at 2 torch threads (the faster setting for every library on the MNIST sweep; on the
    CIFAR ResNet at ℓ∞ one thread took 1.7-1.85x as long for both libraries at every batch), at each
    library's (and each variant's) fastest batch of the case's sweep (best of SWEEP_TRIES runs each), then best of
    ``--repeats``; foolbox runs on the same images and settings. Until the sweep both ran with the
    whole set as one batch, where foolbox is slower: on the CIFAR ResNet at ℓ∞ it took 18 ms per
    image at batch 32 and 26 ms at 200.
    On the CIFAR ResNet boundgeo also runs ``nearest=1``, ``box_step="after_first"`` (alone, with
    ``nearest=1`` and with ``refine=1``) and ``candidates=4``.
    """
    from bench_imagenet_scale import IMAGENET_MEAN, IMAGENET_STD, SIZE, calibrate_batchnorm
    from cifar10 import CHECKPOINT

    rows: list[dict] = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cases = []
        if not CHECKPOINT.exists():
            raise SystemExit(f"{CHECKPOINT} is missing: run analysis/cifar10.py first (it trains the ResNet)")
        resnet = zoo.load_checkpoint(CHECKPOINT).model.eval()
        _, _, xc, yc = zoo.reference_split("cifar10", root=args.cifar_dir)
        with torch.no_grad():
            right = torch.cat([resnet(b).argmax(1) for b in xc.split(500)]) == yc
        cases += [("CIFAR-10 ResNet (trained on part of the CIFAR-10 test split)", resnet,
                   xc[right][: args.models_n].contiguous(), yc[right][: args.models_n], norm, CIFAR_BATCHES)
                  for norm in ("l2", "linf")]
        data = bg.ImageFolder(args.cifar_dir, size=SIZE)
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
        images = torch.stack([data[int(i)][0] for i in order[: 8 + args.resnet50_n]])
        import torchvision.models

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            r50 = torchvision.models.resnet50(weights=None).eval()
        calibrate_batchnorm(r50, images[:8])
        r50 = nn.Sequential(_Normalise(IMAGENET_MEAN, IMAGENET_STD), r50).eval()
        x50 = images[8:].contiguous()
        with torch.no_grad():
            y50 = r50(x50).argmax(1)
        cases.append(("ResNet-50 (RANDOM weights, 224x224)", r50, x50, y50, "l2", RESNET50_BATCHES))
        for name, model, x, y, norm, sweep in cases:
            for p in model.parameters():
                p.requires_grad_(False)
            batches = [b for b in sweep if b < len(x)] + [len(x)]
            run_boundgeo(model, x[:2], y[:2], norm, 2)  # warm-up

            def fastest(runner, **extra) -> tuple[int, list[dict]]:  # the batch, at 2 threads
                best, tried = best_setting(f"{name[:20]} {runner.__name__}", runner, model, x, y, norm,
                                           settings=[(2, batch) for batch in batches], tries=SWEEP_TRIES, **extra)
                return best["batch_size"], [{"batch_size": r["batch_size"], "seconds": r["seconds"]} for r in tried]

            def foolbox_at(k: int) -> dict:  # foolbox at its fastest batch, best of --repeats
                fbatch, fswept = fastest(run_foolbox, candidates=k)
                seconds = float("inf")
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    fadv, fsuccess, _ = run_foolbox(model, x, y, norm, fbatch, candidates=k)
                    seconds = min(seconds, time.perf_counter() - start)
                fsuccess = verify(model, fadv, y, fsuccess)
                return {"batch_size": fbatch, "sweep": fswept, "seconds": seconds, "success": fsuccess,
                        "norms": _norms(fadv - x, norm)}

            def same_k(k: int) -> dict:  # a fewer-candidates row's foolbox at the same k
                fb = foolbox_at(k)
                return {"candidates": k, "foolbox_same_k": {
                    "batch_size": fb["batch_size"], "seconds_per_image": fb["seconds"] / len(x),
                    "success_rate": float(fb["success"].float().mean()),
                    "median_norm": float(fb["norms"][fb["success"]].median())}}

            full = foolbox_at(SETTINGS["candidates"])
            fbatch, fswept, theirs = full["batch_size"], full["sweep"], full["seconds"]
            fsuccess, fnorms = full["success"], full["norms"]

            # the box-aware and refined variants on the CIFAR ResNet, whose inputs are not saturated
            # like MNIST's; the ResNet-50 row times the default only
            variants = OTHER_MODEL_VARIANTS if name.startswith("CIFAR") else OTHER_MODEL_VARIANTS[:1]
            for extra in variants:
                batch, swept = fastest(run_boundgeo, **extra)
                ours = floor = float("inf")
                for _ in range(args.repeats):  # each timed run followed by its floor (interleaved)
                    start = time.perf_counter()
                    adv, success, pts = run_boundgeo(model, x, y, norm, batch, **extra)
                    ours = min(ours, time.perf_counter() - start)
                    floor = min(floor, autograd_floor(model, x, pts, batch, 2, repeats=2))
                success = verify(model, adv, y, success)
                norms = _norms(adv - x, norm)
                both = success & fsuccess
                row = {"model": name, "norm": norm, "variant": _variant(extra), "images": len(x), "batch_size": batch,
                       "foolbox_batch_size": fbatch, "torch_threads": 2, "input_shape": list(x.shape[1:]),
                       "batches_swept": batches, "batch_sweep": {"boundgeo": swept, "foolbox": fswept},
                       "mean_iterations": float(pts.iterations.float().mean()),
                       "box_step": pts.settings.get("box_step"), "refine": pts.settings.get("refine", 0),
                       "success_rate": float(success.float().mean()),
                       "foolbox_success_rate": float(fsuccess.float().mean()),
                       "median_norm": float(norms[success].median()),
                       "foolbox_median_norm": float(fnorms[fsuccess].median()),
                       "paired_norm_ratio_to_foolbox": float((norms[both] / fnorms[both]).median()),
                       "seconds_per_image": ours / len(x), "floor_seconds_per_image": floor,
                       "ratio_to_floor": ours / len(x) / floor, "foolbox_seconds_per_image": theirs / len(x),
                       "time_ratio_to_foolbox": ours / theirs,
                       **(same_k(extra["candidates"]) if "candidates" in extra else {}),
                       "timing": f"each library at its fastest of the batches swept (best of {SWEEP_TRIES} runs "
                                 f"each), then best of {args.repeats}, each run followed by its floor (best of 2 "
                                 f"per call)"}
                rows.append(row)
                print(f"{name} {norm} {row['variant']}: {row['mean_iterations']:.2f} iterations, batch {batch} "
                      f"(foolbox {fbatch}), {row['seconds_per_image'] * 1e3:.1f} ms/img, {row['ratio_to_floor']:.2f}x "
                      f"the floor, {row['time_ratio_to_foolbox']:.3f}x foolbox's time, median ‖r‖ "
                      f"{row['median_norm']:.4f} (foolbox {row['foolbox_median_norm']:.4f})", flush=True)
    finally:
        torch.set_num_threads(before)
    return rows


class _Normalise(nn.Module):
    def __init__(self, mean, std) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def best_setting(name, runner, model, x, y, norm, settings=SWEEP, tries: int = 1,
                 **extra) -> tuple[dict, list[dict]]:
    """Each (threads, batch) of ``settings`` timed best of ``tries`` on ``x``; the fastest, and all of them."""

    def seconds_at(batch: int) -> float:
        best = float("inf")
        for _ in range(tries):
            start = time.perf_counter()
            runner(model, x, y, norm, batch, **extra)
            best = min(best, time.perf_counter() - start)
        return best

    best, rows = _fastest_setting(seconds_at, settings)
    print(f"{name:>20} {norm:>4}: best setting {best['threads']} thread(s), batch {best['batch_size']} "
          f"(of {len(rows)} on {len(x)} images)", flush=True)
    return {"threads": best["threads"], "batch_size": best["batch_size"]}, rows


def measure(name, runner, model, x, y, norm, setting, reference=None, repeats=2, **extra):
    before = torch.get_num_threads()
    torch.set_num_threads(setting["threads"])
    try:
        return _measure(name, runner, model, x, y, norm, setting, reference, repeats, **extra)
    finally:
        torch.set_num_threads(before)


def _measure(name, runner, model, x, y, norm, setting, reference, repeats, **extra):
    batch = setting["batch_size"]
    seconds = floor = float("inf")
    for _ in range(repeats):  # best of `repeats` untimed-hook runs, each followed by its floor
        start = time.perf_counter()
        adv, success, pts = runner(model, x, y, norm, batch, **extra)
        seconds = min(seconds, time.perf_counter() - start)
        if pts is not None:  # interleaved, so that both see the machine in the same state
            floor = min(floor, autograd_floor(model, x, pts, batch, setting["threads"], repeats=2))
    classes = predict(model, adv)  # every library's attack is deterministic: once is enough
    success = verify(model, adv, y, success, classes)
    # Passes are counted on the first layer: ART calls the layers one by one, so hooks on the
    # top-level module would miss its passes. Time per pass is read on the top-level module.
    counter, timer = PassCounter(model[0]), PassCounter(model)
    try:
        hooked = time.perf_counter()
        runner(model, x, y, norm, batch, **extra)
        hooked = time.perf_counter() - hooked
    finally:
        counter.remove()
        timer.remove()
    norms = _norms(adv - x, norm)
    row = {
        "library": name,
        **({"variant": _variant(extra)} if name.startswith("boundgeo") else {}),
        "norm": norm,
        "success_rate": float(success.float().mean()),
        "median_norm": float(norms[success].median()),
        "mean_norm": float(norms[success].mean()),
        "seconds": seconds,
        "seconds_per_image": seconds / len(x),
        "repeats": repeats,
        "timing": f"best of {repeats}",
        "setting": {"torch_threads": setting["threads"], "batch_size": batch},
        "forward_calls": counter.forward,
        "forward_rows_per_image": counter.forward_rows / len(x),
        "backward_calls": counter.backward,
        "backward_rows_per_image": counter.backward_rows / len(x),
    }
    if pts is not None:
        # Minimum the algorithm needs: every iterate is evaluated once (iterations + 1
        # forwards) and every step needs one gradient per candidate kept, plus one for the normal.
        it = pts.iterations.float()
        kept = _kept(pts)
        nearest = pts.settings.get("nearest")
        if nearest is None:
            vjps = kept * it + 1
        else:
            vjps = kept * it.clamp(max=1) + min(nearest, kept) * (it - 1).clamp(min=0) + 1
        row["floor"] = {"seconds_per_image": floor,
                        "what": "boundgeo's iterations replayed as plain model(x) and autograd.grad calls at this "
                                "row's threads and batch (the faster of batched and looped VJPs per call), "
                                f"timed after each of the {repeats} timed runs, best of them"}
        row["ratio_to_floor"] = row["seconds_per_image"] / floor
        refined = pts.cost.get("refine_rows", 0) / len(x)
        row.update({
            "box_step": pts.settings.get("box_step", False),
            "refine": pts.settings.get("refine", 0),
            "refine_rows_per_image": refined,
            "nearest": nearest,
            "mean_iterations": float(it.mean()),
            "minimum_forward_rows_per_image": float((it + 1).mean()) + refined,
            "minimum_backward_rows_per_image": float(vjps.mean()) + refined,
            "forward_seconds": timer.forward_seconds,
            "backward_seconds": timer.backward_seconds,
            "hooked_run_seconds": hooked,
            "other_seconds": hooked - timer.forward_seconds - timer.backward_seconds,
        })
    if reference is not None:
        both = success & reference["success"]
        ratio = norms[both] / reference["norms"][both]
        row["paired_norm_ratio_median"] = float(ratio.median())
        row["paired_norm_ratio_mean"] = float(ratio.mean())
        row["seconds_ratio_to_boundgeo"] = seconds / reference["seconds"]
        row["same_class_as_boundgeo"] = float((classes[both] == reference["classes"][both]).float().mean())
    if "ratio_to_floor" in row:
        print(f"{name:>20} {norm:>4}: {row['mean_iterations']:.2f} iterations, {row['ratio_to_floor']:.2f}x the "
              f"autograd floor")
    print(f"{name:>20} {norm:>4}: success {row['success_rate']:.3f}  median {row['median_norm']:.4f}  "
          f"mean {row['mean_norm']:.4f}  {row['seconds_per_image'] * 1e3:.2f} ms/img  "
          f"fwd {row['forward_rows_per_image']:.1f}/img  bwd {row['backward_rows_per_image']:.1f}/img"
          + (f"  ratio {row['paired_norm_ratio_median']:.4f}  time x{row['seconds_ratio_to_boundgeo']:.2f}"
             if reference is not None else ""))
    return row, {"success": success, "norms": norms, "seconds": seconds, "classes": classes}


def fewer_candidates(model, x, y, rows: list[dict], references: dict, repeats: int) -> list[dict]:
    """boundgeo and foolbox weighing only the top-k classes by clean logit, k in CANDIDATES.

    Each runs at the (threads, batch) that its 10-candidate row found in the sweep, best of
    ``repeats`` (boundgeo's runs each followed by their floor, as above). Fewer candidates change
    the algorithm, not just its cost: a class outside the top k is never stepped towards, so each
    row also reports how often it ends in the class that boundgeo's default reached with all 10
    (``same_class_as_boundgeo``), beside the norms against that default.
    """
    setting_of = {(r["library"], r["norm"]): r["setting"] for r in rows}
    out = []
    for norm in ("l2", "linf"):
        for k in CANDIDATES:
            cases = [("boundgeo" if not extra else f"boundgeo {_variant(extra)}", run_boundgeo, extra)
                     for extra in CANDIDATE_VARIANTS] + [("foolbox", run_foolbox, {})]
            for name, runner, extra in cases:
                found = setting_of[(name, norm)]
                setting = {"threads": found["torch_threads"], "batch_size": found["batch_size"]}
                row, _ = measure(f"{name} k={k}", runner, model, x, y, norm, setting, reference=references[norm],
                                 repeats=repeats, candidates=k, **extra)
                row["library"] = "boundgeo" if name.startswith("boundgeo") else name
                row["variant"] = _variant(extra)
                row["candidates"] = k
                out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "mnist"))
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--skip-art", action="store_true")
    parser.add_argument("--cifar-dir", default=str(ROOT / "data" / "cifar10"))
    parser.add_argument("--models-n", type=int, default=200, help="CIFAR-10 ResNet images of the other-models part")
    parser.add_argument("--resnet50-n", type=int, default=4, help="224x224 images of the other-models part")
    parser.add_argument("--skip-models", action="store_true", help="skip the CIFAR-10 ResNet and ResNet-50 part")
    parser.add_argument("--repeats", type=int, default=5, help="every library is timed best of this many runs")
    parser.add_argument("--sweep-n", type=int, default=500, help="images timed for each setting of SWEEP")
    parser.add_argument("--quick", action="store_true",
                        help="--n 50, --sweep-n 20, into analysis/results/quick/ (unless --out)")
    parser.add_argument("--out", default=None, help="default analysis/results/bench_deepfool.json")
    args = parser.parse_args()
    env = environment()
    if args.quick:
        args.n, args.sweep_n = min(args.n, 50), min(args.sweep_n, 20)
        args.models_n, args.resnet50_n = min(args.models_n, 20), min(args.resnet50_n, 2)
    results = ROOT / "analysis" / "results" / ("quick" if args.quick else "")
    args.out = args.out or str(results / "bench_deepfool.json")

    torch.manual_seed(0)
    trained = zoo.train_reference("mnist", "cnn", root=args.data_dir)
    model = trained.model.eval()
    _, _, x_te, y_te = zoo.reference_split("mnist", root=args.data_dir)
    with torch.no_grad():
        right = model(x_te).argmax(1) == y_te
    x, y = x_te[right][: args.n].contiguous(), y_te[right][: args.n]
    print(f"MNIST CNN: held-out accuracy {trained.accuracy:.4f}; {len(x)} correctly classified "
          f"held-out images; default torch threads {torch.get_num_threads()}")

    rows, sweeps = [], []
    x_sweep, y_sweep = x[: args.sweep_n], y[: args.sweep_n]

    def run(name, runner, norm, reference=None, **extra):
        if name == "boundgeo" and extra:  # one name per variant, the same as the other-models rows'
            name = f"boundgeo {_variant(extra)}"
        setting, tried = best_setting(name, runner, model, x_sweep, y_sweep, norm, **extra)
        sweeps.append({"library": name, "norm": norm, "images": len(x_sweep), "rows": tried})
        return measure(name, runner, model, x, y, norm, setting, reference=reference, repeats=args.repeats,
                       **extra)

    references = {}
    for norm in ("l2", "linf"):
        ours, ref = run("boundgeo", run_boundgeo, norm)
        rows.append(ours)
        references[norm] = ref
        for extra in MNIST_VARIANTS:
            rows.append(run("boundgeo", run_boundgeo, norm, reference=ref, **extra)[0])
        rows.append(run("foolbox", run_foolbox, norm, reference=ref)[0])
        if norm == "l2" and not args.skip_art:
            rows.append(run("art", run_art, norm, reference=ref)[0])

    candidate_rows = fewer_candidates(model, x, y, rows, references, args.repeats)
    first_step = first_step_floor(model, x)
    print(f"first step alone (1 forward, {first_step['gradient_rows']} gradient rows): "
          f"{first_step['seconds_per_image'] * 1e3:.2f} ms/img at {first_step['torch_threads']} thread(s), "
          f"batch {first_step['batch_size']}", flush=True)
    models = [] if args.skip_models else other_models(args)

    import foolbox
    import art

    env.update(foolbox=foolbox.__version__, art=art.__version__)
    result = {
        "environment": finish(env),
        "benchmark": "deepfool",
        "setup": {
            "model": "reference MNIST CNN (boundgeo.zoo), trained on MNIST test images [0, 8000)",
            "model_accuracy": trained.accuracy,
            "images": f"first {len(x)} correctly classified of MNIST test images [8000, 10000)",
            **SETTINGS,
            "clip": [0.0, 1.0],
            "settings_swept": [{"torch_threads": t, "batch_size": b} for t, b in SWEEP],
            "sweep_images": len(x_sweep),
            "timing": f"best of {args.repeats} runs for every library, at its fastest setting of the sweep",
        },
        "rows": rows,
        "candidates": candidate_rows,
        "first_step_floor": first_step,
        "sweeps": sweeps,
        "other_models": models,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
