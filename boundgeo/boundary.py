"""Nearest boundary points and boundary normals: batched multi-class DeepFool.

DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016, arXiv 1511.04599) linearises the
classifier around the current point and steps to the nearest linearised boundary. With
k̂ the label at x, f'_k = f_k - f_k̂ and w'_k = ∇f_k - ∇f_k̂, one step is

    l̂ = argmin_{k ≠ k̂} |f'_k| / ‖w'_k‖_q,     r_i = |f'_l̂| / ‖w'_l̂‖_q · u(w'_l̂)

with q the dual norm (ℓ2: q = 2, u(w) = w / ‖w‖₂; ℓ∞: q = 1, u(w) = sign(w)). The iterate
is x + (1 + η) Σ r_i, η = ``overshoot``, clipped to the bounds.

Every iteration here costs one forward pass of the still-active samples and one vector-Jacobian
product per candidate class on that same graph; the normal of a sample that has just crossed
is taken from the same graph too (it is the gradient of f_target - f_label at its final point),
so collecting normals costs no extra forward pass.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._data import as_positions, as_source
from ._errors import BoundgeoError
from ._perturb import check_norm
from ._results import Result, atomic_write_bytes
from .classifier import Classifier

CONVERGED, NOT_CONVERGED, ZERO_GRADIENT = 0, 1, 2
STATUS_NAMES = ("converged", "not_converged", "zero_gradient")
# Added to the linearised distance |f'|/‖w'‖ of every step (input units), as in the authors'
# code and foolbox, so that a step that lands exactly on the linearised boundary still makes
# progress; with clipping it also keeps the iterations few.
_STEP_SLACK = 1e-4
_TINY = 1e-12
# Relative logit gap that counts as crossed: ~32 ulps (of the logits' dtype) of the largest logit.
_CROSS_ULPS = 32
# On the CPU, batches up to this size take the vmapped backward (see _vjp_rows).
_VMAP_MAX_BATCH_CPU = 4


# ============================================================================== result
@dataclass(frozen=True, eq=False)
class BoundaryPoints(Result):
    """Nearest boundary points of a set of inputs, as found by DeepFool.

    Fields (n inputs, ``*S`` one input's shape):
        perturbation: (n, *S) r(x) including the overshoot and clipping; x + r is across the
            boundary when ``converged``.
        normal: (n, *S) unit normal of the boundary at x + r: the normalised gradient of
            f_target - f_label there (zeros where not converged).
        margin: (n,) ‖r‖ in ``norm``.
        label: (n,) predicted class of x. target: (n,) class at x + r.
        iterations: (n,) DeepFool steps taken. converged: (n,) bool.
        status: (n,) int8: 0 converged, 1 not converged within ``max_iter``, 2 zero gradient
            (flat region or gradient masking: no direction to step in).
        index: (n,) position of each x in the data it came from.
        true_label: (n,) the data's labels when they were given, else None.
        norm: ``"l2"`` or ``"linf"``. settings: the arguments of the run.
        cost: passes through the model, in rows (one input through the network):
            ``forward_rows`` and ``backward_rows`` (vector-Jacobian products).
    """

    perturbation: torch.Tensor
    normal: torch.Tensor
    margin: torch.Tensor
    label: torch.Tensor
    target: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    status: torch.Tensor
    index: torch.Tensor
    norm: str = "l2"
    true_label: torch.Tensor | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.margin.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.perturbation.shape[1:])

    def directions(self, kind: str = "normal", *, only_converged: bool = True) -> torch.Tensor:
        """Unit rows of shape (m, d): boundary normals, or r(x)/‖r(x)‖₂ (the paper's matrix N).

        Args:
            kind: ``"normal"`` or ``"perturbation"``.
            only_converged: keep only the rows of converged samples (m ≤ n); the others have
                no boundary point and would not be unit vectors.
        """
        if kind not in ("normal", "perturbation"):
            raise BoundgeoError(f"kind must be 'normal' or 'perturbation', got {kind!r}")
        rows = (self.normal if kind == "normal" else self.perturbation).reshape(len(self), -1)
        rows = rows.float()
        norms = rows.norm(dim=1)
        keep = norms > 0
        if only_converged:
            keep &= self.converged.to(keep.device)
        rows = rows[keep]
        return rows / norms[keep, None]

    def to_frame(self):
        """One row per input: index, label, target, margin, iterations, converged, status."""
        import pandas as pd

        frame = pd.DataFrame(
            {
                "index": self.index.cpu().numpy(),
                "label": self.label.cpu().numpy(),
                "target": self.target.cpu().numpy(),
                "margin": self.margin.cpu().numpy(),
                "norm": self.norm,
                "iterations": self.iterations.cpu().numpy(),
                "converged": self.converged.cpu().numpy(),
                "status": np.asarray(STATUS_NAMES)[self.status.cpu().numpy().astype(int)],
            }
        )
        if self.true_label is not None:
            frame.insert(1, "true_label", self.true_label.cpu().numpy())
        return frame

    def _map_tensors(self, fn) -> "BoundaryPoints":
        """The same points with ``fn`` applied to every tensor field."""
        return dataclasses.replace(
            self,
            **{f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)
               if isinstance(getattr(self, f.name), torch.Tensor)},
        )

    def select(self, indices) -> "BoundaryPoints":
        """The points at ``indices`` (positions in this result, a LongTensor, bool mask or
        sequence), for example a seeded subset for a costlier analysis; ``index`` keeps
        pointing into the original data."""
        indices = as_positions(indices, "indices")
        if indices.dtype == torch.bool:
            if indices.shape != (len(self),):
                raise BoundgeoError(f"a mask of shape {tuple(indices.shape)} does not fit {len(self)} points")
            indices = indices.nonzero().squeeze(1)
        if indices.numel() and (int(indices.min()) < -len(self) or int(indices.max()) >= len(self)):
            raise BoundgeoError(f"indices span [{int(indices.min())}, {int(indices.max())}], but there are "
                                f"{len(self)} points")
        return self._map_tensors(lambda t: t[indices.to(t.device)])

    def to(self, device: str | torch.device) -> "BoundaryPoints":
        """The same points with every tensor on ``device``."""
        return self._map_tensors(lambda t: t.to(device))

    @classmethod
    def concat(cls, parts: list["BoundaryPoints"]) -> "BoundaryPoints":
        """Stack several results of the same run (for example shards) into one."""
        if not parts:
            raise BoundgeoError("nothing to concatenate")
        tensors = {}
        for f in dataclasses.fields(cls):
            first = getattr(parts[0], f.name)
            values = [getattr(p, f.name) for p in parts]
            if all(isinstance(v, torch.Tensor) for v in values):
                tensors[f.name] = torch.cat(values)
            elif isinstance(first, torch.Tensor) or f.name == "true_label":
                tensors[f.name] = None  # labels known for some parts only: drop them
        cost = {key: sum(p.cost.get(key, 0) for p in parts) for key in parts[0].cost}
        return dataclasses.replace(parts[0], cost=cost, **tensors)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BoundaryPoints":
        """Load a result saved with :meth:`save`, or the output directory of
        :func:`boundary_normals`; the arrays of the latter are memory-mapped."""
        path = Path(path)
        if path.is_dir():
            return _load_collection(path)
        return super().load(path)


# ============================================================================== deepfool
def _check_settings(norm, overshoot, max_iter, candidates, batch_size, nearest) -> None:
    check_norm(norm)
    if not overshoot >= 0:
        raise BoundgeoError(f"overshoot must be >= 0, got {overshoot!r}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise BoundgeoError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if candidates is not None and candidates < 2:
        raise BoundgeoError(f"candidates must be >= 2 (the label and one other) or None, got {candidates!r}")
    if batch_size < 1:
        raise BoundgeoError(f"batch_size must be >= 1, got {batch_size!r}")
    if nearest is not None and nearest < 1:
        raise BoundgeoError(f"nearest must be >= 1 or None, got {nearest!r}")


def _vjp_rows(out: torch.Tensor, inp: torch.Tensor, grad_outputs: torch.Tensor) -> torch.Tensor:
    """Vector-Jacobian products of one graph with B grad_outputs: (B, m, C) -> (B, m, *S).

    On CUDA one vmapped backward (``is_grads_batched``) is fastest. On the CPU it depends on the
    batch: for 9 rows of an MNIST CNN the loop over the retained graph took 95 ms against 154 ms
    vmapped at 128 inputs and the two tie at 8-32, but for a single input the vmapped backward
    took 1.3 ms against 2.6 ms (per-call overhead dominates). Both give the same numbers.
    """
    rows = grad_outputs.shape[0]
    if rows > 1 and (inp.device.type != "cpu" or inp.shape[0] <= _VMAP_MAX_BATCH_CPU):
        try:
            # retain_graph: if an op has no batching rule the error can come half way through the
            # backward, and the loop below still needs the graph
            return torch.autograd.grad(out, inp, grad_outputs, is_grads_batched=True, retain_graph=True)[0]
        except RuntimeError:  # an op without a batching rule: fall back to the loop
            pass
    # written into one preallocated tensor: a list plus torch.stack would hold it twice
    result = torch.empty((rows,) + tuple(inp.shape), dtype=inp.dtype, device=inp.device)
    for j in range(rows):
        result[j] = torch.autograd.grad(out, inp, grad_outputs[j], retain_graph=j < rows - 1)[0]
    return result


def _candidates(logits: torch.Tensor, candidates: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and candidate classes (n, k): the label first, then the top k-1 others by logit."""
    label = logits.argmax(1)
    k = logits.shape[1] if candidates is None else min(int(candidates), logits.shape[1])
    ranked = logits.clone()
    ranked.scatter_(1, label[:, None], float("inf"))
    cand = ranked.topk(k, dim=1).indices
    assert torch.equal(cand[:, 0], label), "the label must lead the candidate list"
    return label, cand


def _deepfool_batch(
    clf: Classifier,
    x: torch.Tensor,
    *,
    norm: str,
    overshoot: float,
    max_iter: int,
    candidates: int | None,
    clip: bool,
    nearest: int | None,
) -> dict[str, torch.Tensor]:
    n = x.shape[0]
    label = cand = None  # set from the first forward, at x itself
    r_total = torch.zeros_like(x)
    x_adv = x.clone()
    target = torch.zeros(n, dtype=torch.long, device=x.device)
    normal = torch.zeros_like(x)
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    status = torch.full((n,), NOT_CONVERGED, dtype=torch.int8, device=x.device)
    active = torch.arange(n, device=x.device)

    forward_rows = backward_rows = 0
    for it in range(max_iter + 1):
        if active.numel() == 0:
            break
        xa = x_adv[active].detach().requires_grad_(True)
        forward_rows += active.numel()
        logits = clf.forward(xa)
        detached = logits.detach()
        pred = detached.argmax(1)
        if it == 0:
            label, cand = _candidates(detached, candidates)
            target = label.clone()
            num_classes = detached.shape[1]
        lab = label[active]
        # Crossed means across by more than float rounding: a point across by 1e-6 in logits
        # can flip back when the same input is evaluated in another batch.
        gap = detached.gather(1, pred[:, None]).squeeze(1) - detached.gather(1, lab[:, None]).squeeze(1)
        tol = _CROSS_ULPS * torch.finfo(detached.dtype).eps * (1.0 + detached.abs().amax(dim=1))
        crossed = (pred != lab) & (gap > tol)
        stepping = ~crossed if it < max_iter else torch.zeros_like(crossed)
        if not crossed.any() and not stepping.any():
            break  # the last forward found nobody crossing: nothing left to differentiate

        m = active.numel()
        rows = cand.shape[1] - 1 if stepping.any() else 1
        grad_outputs = torch.zeros(rows, m, num_classes, device=x.device, dtype=logits.dtype)
        arange_m = torch.arange(m, device=x.device)
        if stepping.any():
            # Samples still on their side: one row per candidate class, e_k - e_label.
            weight = stepping.to(logits.dtype).expand(rows, m)
            grad_outputs.scatter_(2, cand[active, 1:].T.unsqueeze(2), weight.unsqueeze(2))
            grad_outputs[:, arange_m, lab] -= weight
        # Samples that crossed: row 0 is e_target - e_label, whose gradient is the normal.
        grad_outputs[0, arange_m, pred] += crossed.to(logits.dtype)
        grad_outputs[0, arange_m, lab] -= crossed.to(logits.dtype)
        grads = _vjp_rows(logits, xa, grad_outputs)
        backward_rows += rows * m
        assert grads.shape == (rows,) + tuple(xa.shape), (grads.shape, rows, xa.shape)

        done = active[crossed]
        if done.numel():
            g = grads[0, crossed]
            g_norm = g.flatten(1).norm(dim=1)
            unit = g / g_norm.clamp_min(_TINY).view((-1,) + (1,) * (g.dim() - 1))
            normal[done] = torch.where(
                (g_norm > _TINY).view((-1,) + (1,) * (g.dim() - 1)), unit, torch.zeros_like(unit)
            )
            target[done] = pred[crossed]
            status[done] = CONVERGED

        if stepping.any():
            idx = active[stepping]
            # (rows, m', d): a view when every sample steps (the common case), else one copy
            w = (grads if bool(stepping.all()) else grads[:, stepping]).flatten(2)
            f = (logits.detach()[stepping].gather(1, cand[idx, 1:])
                 - logits.detach()[stepping].gather(1, lab[stepping, None]))  # (m', rows)
            w_norm = torch.linalg.vector_norm(w, ord=2 if norm == "l2" else 1, dim=2).T  # (m', rows)
            usable = w_norm > _TINY
            ratio = torch.where(usable, f.abs() / w_norm.clamp_min(_TINY), torch.full_like(f, float("inf")))
            flat = ~usable.any(dim=1)
            if flat.any():  # no candidate has a gradient: report, never divide by zero
                status[idx[flat]] = ZERO_GRADIENT
            best = ratio.argmin(dim=1)
            pick = torch.arange(len(idx), device=x.device)
            w_best, f_best, n_best = w[best, pick], f[pick, best], w_norm[pick, best]
            # step length in input units: the linearised distance plus the reference slack
            length = f_best.abs() / n_best.clamp_min(_TINY) + _STEP_SLACK
            if norm == "l2":
                step = (length / n_best.clamp_min(_TINY))[:, None] * w_best
            else:
                step = length[:, None] * w_best.sign()
            step[flat] = 0
            r_total[idx] += step.view((-1,) + tuple(x.shape[1:]))
            moved = x[idx] + (1.0 + overshoot) * r_total[idx]
            if clip:
                moved = clf.clip(moved)
            # Evaluate exactly x + r, the tensor a user rebuilds from the result, so that the
            # class found across the boundary is reproducible bit for bit.
            x_adv[idx] = x[idx] + (moved - x[idx])
            iterations[idx] += (~flat).long()
            if it == 0 and nearest is not None and nearest < cand.shape[1] - 1:
                order = ratio.argsort(dim=1)[:, :nearest]
                narrowed = cand[:, : nearest + 1].clone()
                narrowed[idx, 1:] = cand[idx, 1:].gather(1, order)
                cand = narrowed
            keep = torch.ones(m, dtype=torch.bool, device=x.device)
            keep[crossed] = False
            keep[stepping.nonzero().squeeze(1)[flat]] = False
            active = active[keep]
        else:
            active = active[~crossed]

    perturbation = (x_adv - x).detach()
    flat_r = perturbation.flatten(1)
    margin = flat_r.norm(dim=1) if norm == "l2" else flat_r.abs().amax(dim=1)
    return {
        "perturbation": perturbation,
        "normal": normal.detach(),
        "margin": margin,
        "label": label,
        "target": target,
        "iterations": iterations,
        "converged": status == CONVERGED,
        "status": status,
        "cost": {"forward_rows": forward_rows, "backward_rows": backward_rows},
    }


def deepfool(
    clf: Classifier,
    x,
    *,
    norm: str = "l2",
    overshoot: float = 0.02,
    max_iter: int = 50,
    candidates: int | None = 10,
    batch_size: int = 256,
    clip: bool = True,
    nearest: int | None = 3,
    progress: bool = False,
) -> BoundaryPoints:
    """Minimal perturbations across the decision boundary and the boundary normals there.

    Multi-class DeepFool (Moosavi-Dezfooli et al., CVPR 2016, Algorithm 2) for ℓ2 and for ℓ∞
    (the ℓ1-dual step), relative to the predicted label, so no labels are needed.

    Args:
        clf: the classifier.
        x: inputs (n, *S) within ``clf.bounds``.
        norm: ``"l2"`` or ``"linf"``.
        overshoot: η; the iterate is x + (1 + η) Σ r_i (as in the paper; never scaled by the
            input range).
        max_iter: most DeepFool steps per input; inputs that have not crossed by then are
            reported with ``converged=False``.
        candidates: classes considered, the top-k by clean logit including the label (None:
            all classes).
        batch_size: inputs per batch; crossed inputs leave the batch at once.
        clip: project the iterate onto ``clf.bounds`` at every step.
        nearest: after the first step keep only this many candidate classes per input, the
            nearest by the linearised distance |f'_k| / ‖w'_k‖_q; later steps then need
            ``nearest`` gradients instead of ``candidates - 1``. None keeps all candidates at
            every step (textbook DeepFool). On the MNIST CNN benchmark the default 3 halves
            the time and leaves the median and mean ‖r‖ unchanged to four digits.
        progress: show a progress bar over batches.

    Returns:
        :class:`BoundaryPoints` on the classifier's device, ``index`` = 0..n-1.

    Shape:
        x: (n, *S) → perturbation, normal: (n, *S); margin, label, target: (n,).

    Example:
        >>> import torch, boundgeo as bg
        >>> clf = bg.Classifier(torch.nn.Linear(2, 2).eval(), bounds=(-10, 10))
        >>> pts = bg.deepfool(clf, torch.zeros(3, 2), clip=False)
        >>> bool(pts.converged.all())
        True
    """
    _check_settings(norm, overshoot, max_iter, candidates, batch_size, nearest)
    x = clf.check_inputs(x)
    settings = dict(norm=norm, overshoot=float(overshoot), max_iter=int(max_iter),
                    candidates=candidates, clip=bool(clip), nearest=nearest)
    chunks = x.split(batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="deepfool", unit="batch")
    parts = [
        _deepfool_batch(clf, chunk, norm=norm, overshoot=overshoot, max_iter=int(max_iter),
                        candidates=candidates, clip=clip, nearest=nearest)
        for chunk in chunks
    ]
    fields_ = {key: torch.cat([p[key] for p in parts]) for key in parts[0] if key != "cost"}
    cost = {key: sum(p["cost"][key] for p in parts) for key in parts[0]["cost"]}
    return BoundaryPoints(
        **fields_,
        cost=cost,
        index=torch.arange(x.shape[0], device=x.device),
        norm=norm,
        settings=settings,
    )


# ============================================================================== collection
_RUN_FILE = "run.json"
_SHARDS = "shards"
_POINTS = "points"


def _shard_stem(out: Path, k: int) -> Path:
    return out / _SHARDS / f"{k:05d}"


def _shard_done(out: Path, k: int) -> bool:
    stem = _shard_stem(out, k)
    return stem.with_suffix(".json").exists() and stem.with_suffix(".npz").exists()


def boundary_normals(
    clf: Classifier,
    data,
    *,
    n: int | None = None,
    norm: str = "l2",
    batch_size: int = 256,
    out: str | os.PathLike | None = None,
    resume: bool = True,
    seed: int = 0,
    progress: bool = True,
    keep_misclassified: bool = False,
    shard_size: int | None = None,
    **deepfool_kwargs: Any,
) -> BoundaryPoints:
    """Boundary points and normals over a dataset, in shards, resumable.

    Args:
        clf: the classifier.
        data: inputs, an (inputs, labels) pair, a torch Dataset or a DataLoader.
        n: number of boundary points wanted; None takes every input in order. With n, the
            inputs are taken in a random order fixed by ``seed`` until n are collected.
        norm: ``"l2"`` or ``"linf"``.
        batch_size: DeepFool batch size.
        out: directory; when given, each shard is written as soon as it is done (atomically)
            and the finished result is stored memory-mapped in ``out/points``.
        resume: continue from the finished shards in ``out`` (the settings must match).
        seed: fixes the choice and order of inputs.
        progress: a progress bar over inputs.
        keep_misclassified: when labels are given, inputs the model gets wrong are skipped
            (and counted in ``settings["skipped_misclassified"]``) unless this is True.
        shard_size: inputs per shard (default ``batch_size``); memory stays bounded by it.
        **deepfool_kwargs: ``overshoot``, ``max_iter``, ``candidates``, ``clip``, ``nearest``.

    Returns:
        :class:`BoundaryPoints` on the CPU; ``index`` points into ``data``.
    """
    unknown = set(deepfool_kwargs) - {"overshoot", "max_iter", "candidates", "clip", "nearest"}
    if unknown:
        raise BoundgeoError(f"unknown deepfool arguments {sorted(unknown)}")
    df_kwargs = dict(overshoot=0.02, max_iter=50, candidates=10, clip=True, nearest=3)
    df_kwargs.update(deepfool_kwargs)
    _check_settings(norm, df_kwargs["overshoot"], df_kwargs["max_iter"], df_kwargs["candidates"],
                    batch_size, df_kwargs["nearest"])
    source = as_source(data)
    total = len(source)
    if n is not None and not 1 <= n <= total:
        raise BoundgeoError(f"n must be between 1 and the {total} inputs in data, got {n}")
    shard_size = int(shard_size or batch_size)
    if shard_size < 1:
        raise BoundgeoError(f"shard_size must be >= 1, got {shard_size}")
    order = (torch.arange(total) if n is None
             else torch.randperm(total, generator=torch.Generator().manual_seed(seed)))
    wanted = total if n is None else n
    filter_wrong = source.has_labels and not keep_misclassified
    settings = dict(norm=norm, n=n, seed=seed, shard_size=shard_size, batch_size=batch_size,
                    keep_misclassified=keep_misclassified, num_inputs=total, **df_kwargs)

    out_path = Path(out) if out is not None else None
    if out_path is not None:
        _prepare_out(out_path, settings, resume)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=wanted, desc="boundary normals", unit="pt" if n is not None else "input")
    parts: list[BoundaryPoints] = []
    shard_counts: list[int] = []
    collected, skipped, k, start = 0, 0, 0, 0
    labelled, cost = True, {}
    while collected < wanted and start < total:
        if out_path is not None and resume and _shard_done(out_path, k):
            part = BoundaryPoints.load(_shard_stem(out_path, k))
        else:
            idx = order[start : start + shard_size]
            x, y = source.get(idx)
            x = clf.check_inputs(x)
            wrong = 0
            keep = wanted - collected
            if filter_wrong:
                right = clf.predict(x, batch_size=batch_size).cpu() == y.cpu()
                kept = right.nonzero().squeeze(1)
                # count the misclassified inputs only up to the last one the result takes
                seen = len(right) if len(kept) <= keep else int(kept[keep - 1]) + 1
                wrong = int((~right[:seen]).sum())
                idx, x, y = idx[right], x[right], y[right]
            # with n=, run DeepFool only on the inputs still wanted, so that the shards hold
            # exactly the result's rows (and no work is thrown away)
            idx, x = idx[:keep], x[:keep]
            y = None if y is None else y[:keep]
            if idx.numel():
                found = deepfool(clf, x, norm=norm, batch_size=batch_size, **df_kwargs)
                part = dataclasses.replace(
                    found.to("cpu"), index=idx, true_label=None if y is None else y.cpu().long(),
                    settings={"skipped_misclassified": wrong},
                )
            else:
                part = _empty_like_shard(source, wrong)
            if out_path is not None:
                part.save(_shard_stem(out_path, k))
        skipped += int(part.settings.get("skipped_misclassified", 0))
        take = len(part)
        if take:
            labelled &= part.true_label is not None
            for key, value in part.cost.items():
                cost[key] = cost.get(key, 0) + value
            if out_path is None:  # in memory; with out= the shards stay on disk only
                parts.append(part)
        shard_counts.append(take)
        collected += take
        if bar is not None:  # without n the bar counts inputs processed, with n points collected
            bar.update(take if n is not None else _shard_size_of(start, total, shard_size))
        start += shard_size
        k += 1
    if bar is not None:
        bar.close()
    if collected == 0:
        raise BoundgeoError("no input left: the model misclassifies all of them "
                            "(pass keep_misclassified=True to use them anyway)")
    settings["skipped_misclassified"] = skipped
    if skipped and progress:
        print(f"boundary_normals: skipped {skipped} misclassified inputs "
              "(keep_misclassified=True keeps them)")
    if n is not None and collected < n:
        print(f"boundary_normals: only {collected} of the {n} wanted inputs are usable")
    if out_path is not None:
        _write_collection(out_path, shard_counts, settings, labelled=labelled, cost=cost)
        return BoundaryPoints.load(out_path)
    return dataclasses.replace(BoundaryPoints.concat(parts), settings=settings)


def _shard_size_of(start: int, total: int, shard_size: int) -> int:
    return min(shard_size, total - start)


def _empty_like_shard(source, skipped: int) -> BoundaryPoints:
    x, _ = source.get(torch.tensor([0]))
    shape = tuple(x.shape[1:])
    zeros = torch.zeros((0,) + shape)
    empty_long = torch.zeros(0, dtype=torch.long)
    return BoundaryPoints(
        perturbation=zeros, normal=zeros.clone(), margin=torch.zeros(0), label=empty_long,
        target=empty_long.clone(), iterations=empty_long.clone(),
        converged=torch.zeros(0, dtype=torch.bool), status=torch.zeros(0, dtype=torch.int8),
        index=empty_long.clone(), true_label=empty_long.clone(),
        settings={"skipped_misclassified": skipped},
    )


def _prepare_out(out: Path, settings: dict[str, Any], resume: bool) -> None:
    run_file = out / _RUN_FILE
    record = json.dumps(settings, sort_keys=True, default=str)
    if run_file.exists():
        previous = run_file.read_text()
        if resume and json.loads(previous) != json.loads(record):
            raise BoundgeoError(
                f"{out} holds a run with other settings ({previous.strip()}); "
                "use another out= or resume=False to start over"
            )
        if not resume:
            import shutil

            for sub in (_SHARDS, _POINTS):
                shutil.rmtree(out / sub, ignore_errors=True)
    (out / _SHARDS).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_file, lambda h: h.write(record.encode()))


def _write_collection(out: Path, shard_counts: list[int], settings: dict[str, Any], *, labelled: bool,
                      cost: dict[str, int]) -> None:
    """Store the finished result as one .npy per field (memory-mappable) plus meta.json.

    The files are written by streaming the shards one after another (the header first, then
    each shard's rows as raw bytes), so memory stays at one shard however large the result.
    """
    folder = out / _POINTS
    folder.mkdir(parents=True, exist_ok=True)
    used = [k for k, count in enumerate(shard_counts) if count]
    first = BoundaryPoints.load(_shard_stem(out, used[0]))
    total = sum(shard_counts)
    names = [f.name for f in dataclasses.fields(first) if isinstance(getattr(first, f.name), torch.Tensor)]
    if "true_label" in names and not labelled:  # labels known for some shards only: drop them
        names.remove("true_label")
    handles, temps = {}, {}
    try:
        for name in names:
            array = getattr(first, name).numpy()
            temps[name] = folder / f".{name}.npy.tmp"
            handles[name] = open(temps[name], "wb")
            header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
                      "shape": (total,) + array.shape[1:]}
            np.lib.format.write_array_header_2_0(handles[name], header)
        for k in used:
            shard = first if k == used[0] else BoundaryPoints.load(_shard_stem(out, k))
            for name in names:
                rows = getattr(shard, name).numpy()
                handles[name].write(np.ascontiguousarray(rows).tobytes())
            del shard
    finally:
        for handle in handles.values():
            handle.close()
    for name in names:
        os.replace(temps[name], folder / f"{name}.npy")
    meta = {"norm": first.norm, "settings": settings, "arrays": names, "cost": cost}
    atomic_write_bytes(folder / "meta.json", lambda h: h.write(json.dumps(meta, indent=2).encode()))


def _load_collection(out: Path) -> BoundaryPoints:
    folder = out / _POINTS
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        raise BoundgeoError(f"{out} holds no finished boundary_normals run ({meta_path} is missing)")
    meta = json.loads(meta_path.read_text())
    arrays = {}
    for name in meta["arrays"]:
        # copy-on-write map: pages are read on demand and never written back
        arrays[name] = torch.from_numpy(np.load(folder / f"{name}.npy", mmap_mode="c"))
    arrays.setdefault("true_label", None)
    settings = {**meta["settings"], "loaded_from": str(out)}
    return BoundaryPoints(**arrays, norm=meta["norm"], settings=settings, cost=meta.get("cost", {}))


def iter_shards(out: str | os.PathLike) -> Iterator[BoundaryPoints]:
    """The finished shards of a :func:`boundary_normals` run, one at a time (bounded memory)."""
    out = Path(out)
    k = 0
    while _shard_done(out, k):
        yield BoundaryPoints.load(_shard_stem(out, k))
        k += 1
    if k == 0:
        raise BoundgeoError(f"{out} holds no shards of a boundary_normals run")
