"""Render a report (Markdown and self-contained HTML) from the results saved in a directory.

The report reads only saved results (``.npz`` + ``.json``) and draws the figures from them, so
re-rendering gives the same numbers without recomputing anything. Whatever stages are present
are reported; missing ones are skipped.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from ._errors import BoundgeoError

RUN_FILE = "setup.json"  # written by the command line: the model, the data and their notes


def _run_info(out: Path) -> dict:
    """The record of what was analysed (``out/setup.json``), or {} for results saved otherwise."""
    path = out / RUN_FILE
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text())
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
        raise BoundgeoError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise BoundgeoError(f"{path} must hold a JSON object, got {type(info).__name__}")
    return info


def _load(out: Path):
    from .attacks.boundary import BoundaryPoints
    from .attacks.universal import PerturbedExamples, UniversalPerturbation
    from .geometry.categories import RobustnessProfile
    from .geometry.curvature import Curvature, CurvatureFooling
    from .geometry.margins import SubspaceMargins
    from .geometry.spectral import Spectrum
    from .geometry.subspace import AdversarialDimension, SubspaceFooling

    found = {}
    for name, cls, path in (("spectrum", Spectrum, out / "spectrum"),
                            ("subspace", SubspaceFooling, out / "subspace_fooling"),
                            ("curvature", Curvature, out / "curvature"),
                            ("margins", SubspaceMargins, out / "subspace_margins"),
                            ("dimension", AdversarialDimension, out / "adversarial_dimension"),
                            ("curved", CurvatureFooling, out / "curvature_fooling"),
                            ("universal", UniversalPerturbation, out / "universal"),
                            ("profile", RobustnessProfile, out / "profile"),
                            ("examples", PerturbedExamples, out / "examples")):
        if path.with_suffix(".json").exists():
            found[name] = cls.load(path)
    if (out / "normals" / "points" / "meta.json").exists():
        found["normals"] = BoundaryPoints.load(out / "normals")
    classes = sorted((out / "class_spectra").glob("label_*.json"), key=lambda p: int(p.stem.split("_")[1]))
    if classes:
        found["classes"] = {int(p.stem.split("_")[1]): Spectrum.load(p.with_suffix("")) for p in classes}
    if not found:
        raise BoundgeoError(f"{out} holds no saved boundgeo results to report on")
    return found


def draw_figures(out: str | Path) -> list[str]:
    """Draw the figures of the saved results in ``out`` as PNG and PDF; returns their names."""
    out = Path(out)
    return _draw(out, _load(out), _run_info(out))


def _draw(out: Path, res: dict, info: dict) -> list[str]:
    import matplotlib.pyplot as plt
    import numpy as np

    from . import plot

    drawn = []

    def save(ax, name):
        fig = ax.figure
        fig.tight_layout()
        for suffix in ("png", "pdf"):
            fig.savefig(out / f"{name}.{suffix}", dpi=130)
        plt.close(fig)
        drawn.append(name)

    if "spectrum" in res:
        save(plot.plot_spectrum(res["spectrum"]), "spectrum")
        k = min(10, len(res["spectrum"].components))
        axes = plot.plot_directions(res["spectrum"].basis(k, reshape=True), titles=[f"v{i + 1}" for i in range(k)])
        save(np.ravel(axes)[0], "principal_directions")
    if "subspace" in res:
        save(plot.plot_subspace_fooling(res["subspace"]), "subspace_fooling")
    if "curvature" in res:
        save(plot.plot_curvature(res["curvature"]), "curvature")
        if res["curvature"].along is not None:
            save(plot.plot_section_curvature(res["curvature"]), "section_curvature")
    if "margins" in res:
        save(plot.plot_subspace_margins(res["margins"], reference=res["margins"].settings.get("full_space_median")),
             "subspace_margins")
    if "classes" in res and res["classes"]:
        tops = [spec.components[0].reshape(spec.input_shape) for spec in res["classes"].values()]
        names = info.get("classes")
        titles = [(names[c] if names and info.get("labels_compared", True) and c < len(names) else f"class {c}")
                  + f" (n = {spec.n})" for c, spec in res["classes"].items()]
        axes = plot.plot_directions(np.stack([t.numpy() for t in tops]), titles=titles)
        save(np.ravel(axes)[0], "class_directions")
    if "universal" in res:
        save(plot.plot_perturbation(res["universal"]), "universal")
    if "profile" in res:
        save(plot.plot_profile(res["profile"], log_eps=True), "profile")
    classes = info.get("classes")
    # predictions index the data's classes only when their counts agree (the CLI checks)
    predicted_names = classes if classes is not None and info.get("labels_compared", True) else None
    if "examples" in res:
        truth = info.get("examples_true_label")
        true_names = ([classes[c] for c in truth] if classes is not None and truth is not None
                      and len(truth) == len(res["examples"].before) else None)
        save(plot.plot_examples(res["examples"], class_names=predicted_names, true_names=true_names)[0][0],
             "examples")
    if "normals" in res:
        pts = res["normals"]
        if predicted_names is None and classes is not None and pts.true_label is not None:
            ax = plot.plot_margins(pts, by="true_label", class_names=classes)
        else:
            ax = plot.plot_margins(pts, class_names=predicted_names)
        save(ax, "margins")
    return drawn


def findings(out: str | Path) -> list[tuple[str, list[str], str | None]]:
    """(heading, sentences, figure name) for every stage whose results are saved in ``out``."""
    out = Path(out)
    return _findings(_load(out), _run_info(out))


def _setup_findings(info: dict) -> list[tuple[str, list[str], str | None]]:
    """What was analysed, from setup.json: model, weights, normalisation, data and classes."""
    if not info:
        return []
    sentences = []
    if info.get("model"):
        model = f"Model: {info['model']}"
        details = [f"{info['parameters']:,} parameters" if info.get("parameters") else "",
                   f"{info['num_classes']} classes" if info.get("num_classes") else "",
                   f"weights {info['weights']}" if info.get("weights") else "",
                   f"outputs read as {info['outputs']}" if info.get("outputs") not in (None, "auto") else ""]
        sentences.append(model + "".join(f", {d}" for d in details if d) + ".")
    if info.get("mean") is not None or info.get("std") is not None:
        preset = f" (preset {info['preset']})" if info.get("preset") not in (None, "none") else ""
        sentences.append(f"Inputs are normalised inside the classifier with mean {info.get('mean')} and "
                         f"std {info.get('std')}{preset}.")
    if info.get("description"):
        shape = "x".join(map(str, info.get("input_shape") or []))
        shown = f"; inputs of {shape}" if shape and shape not in info["description"] else ""
        sentences.append(f"Data: {info['description']}{shown}.")
    classes = info.get("classes")
    if classes:
        shown = ", ".join(classes[:20]) + (f", … ({len(classes)} in all)" if len(classes) > 20 else "")
        sentences.append(f"Classes: {shown}.")
    return [("What was analysed", sentences, None)] if sentences else []


def _held_out_target(uap) -> str:
    """The end of the report's targeted sentence: what v does to the held-out inputs, if known."""
    text = uap.held_out_target_text()
    return "." if text is None else f"; {text}."


def _findings(res: dict, info: dict | None = None) -> list[tuple[str, list[str], str | None]]:
    sections = _setup_findings(info or {})
    if "normals" in res:
        pts = res["normals"]
        ok = pts.converged
        margins = pts.margin[ok]
        skipped = pts.settings.get("skipped_misclassified", 0)
        sections.append(("Boundary points (DeepFool)", [
            f"DeepFool ({pts.norm}) reached the decision boundary for {int(ok.sum())} of {len(pts)} inputs"
            + (f" ({skipped} misclassified inputs were skipped)." if skipped else "."),
            f"The median distance to the boundary is ‖r‖ = {float(margins.median()):.4g} "
            f"(mean {float(margins.mean()):.4g}, smallest {float(margins.min()):.4g}).",
        ], "margins"))
    if "spectrum" in res:
        spec = res["spectrum"]
        summary = spec.summary()
        kind = "unit normals" if spec.kind == "normal" else "unit directions r(x)/‖r(x)‖"
        top = min(10, len(spec.singular_values))  # fewer with fewer than 10 normals
        sections.append(("Spectrum of the boundary directions", [
            f"The {spec.n} {kind} in R^{spec.d} hold 90% of their energy Σσ² in "
            f"{summary['dim_90']} dimensions; {spec.n} random unit vectors need {summary['random_dim_90']} "
            f"(concentration {summary['concentration']:.3g}x).",
            f"The top {top} directions hold {spec.energy(top):.1%} of the energy, "
            f"against {spec.energy(min(top, len(spec.baseline_mean)), baseline=True):.1%} for random vectors; "
            f"effective rank {spec.effective_rank:.3g} against {spec.baseline_effective_rank:.3g}.",
        ] + ([
            f"In one number: the mean of cos² over pairs of these directions is {spec.mean_squared_cosine:.3g}, "
            f"against 1/d = {spec.random_mean_squared_cosine:.3g} for random unit vectors; "
            f"{spec.abs_cosine_above_half:.1%} of pairs have |cos| > 0.5, against "
            f"{spec.random_abs_cosine_above_half:.2g} for random ones"
            + (f" (from {spec.pair_rows} seeded rows)." if spec.pair_rows < spec.n else "."),
        ] if spec.pair_rows >= 2 else []), "spectrum"))
    if "subspace" in res:
        sub = res["subspace"]
        low = (sub.full_rate < 0.10).nonzero().squeeze(1)
        at = int(low[-1]) if len(low) else 0
        sections.append(("Random vectors in the principal subspace", [
            f"At radius {float(sub.radii[at]):.4g}, random vectors in the top-{sub.k} subspace fool "
            f"{float(sub.subspace_rate[at]):.1%} of {sub.n} held-out inputs, random vectors in the full "
            f"space {float(sub.full_rate[at]):.1%} ({sub.settings.get('draws', '?')} draws each).",
        ], "subspace_fooling"))
    if "curvature" in res:
        sections += _curvature_findings(res["curvature"])
    sections += _geometry_findings(res)
    if "universal" in res:
        uap = res["universal"]
        held = (f" and {uap.eval_fooling_rate:.1%} of held-out inputs" if uap.eval_fooling_rate is not None else "")
        examples = res.get("examples")
        shown = (f" Of {len(examples.before)} held-out examples shown, {int((examples.before != examples.after).sum())} "
                 "change class (red labels)." if examples is not None else "")
        sections.append(("Universal perturbation", [
            f"One perturbation with ‖v‖_{'2' if uap.norm == 'l2' else '∞'} ≤ {uap.xi:.4g} "
            f"(method {uap.method}) changes the prediction of {uap.fooling_rate:.1%} of the inputs it was "
            f"fitted on{held}, after {uap.passes} passes ({uap.seconds:.1f} s).{shown}",
            *([f"It is targeted at class {uap.target}: it sends {uap.target_rate:.1%} of the fitted inputs not "
               f"already predicted as {uap.target} there"
               + _held_out_target(uap)]
              if getattr(uap, "target", None) is not None else []),
        ], "universal"))
        if examples is not None:
            largest = float(uap.perturbation.abs().max())
            low, high = (info or {}).get("bounds") or (0.0, 1.0)
            unseen = " (under 2% of the input range: not visible in the pictures)" if largest < 0.02 * (high - low) else ""
            sections.append(("Perturbed examples", [
                "Held-out inputs before (top) and after (bottom) adding the universal perturbation, "
                f"with the predicted classes; its largest change of one value is {largest:.3g}{unseen}."],
                "examples"))
    if "profile" in res:
        prof = res["profile"]
        fmt = lambda v: "not reached" if v is None else f"{v:.4g}"
        sentences = [
            f"Per-image adversarial perturbations exist for half of the inputs from ε₂ = {fmt(prof.eps2)}, "
            f"a universal perturbation fools half of them from ε₃ = {fmt(prof.eps3)}, and random "
            f"perturbations from ε₄ = {fmt(prof.eps4)} ({prof.norm}, τ = {prof.threshold:g}).",
        ]
        if prof.ratio_42 is not None:
            sentences.append(f"ε₄/ε₂ = {prof.ratio_42:.3g}, against √d = {math.sqrt(prof.d):.3g} for flat "
                             "boundaries (Fawzi et al. 2016).")
        sentences.append("These categories are evidence from attacks, not proofs: every ∃ is a witness "
                         "that an attack found.")
        sections.append(("Robustness categories", sentences, "profile"))
    return sections


def _curvature_findings(curv) -> list[tuple[str, list[str], str | None]]:
    frame = curv.to_frame()
    top = frame[frame["rank"] == 1].curvature
    if curv.method == "autograd":
        how = "exact Hessian-vector products"
    elif curv.settings.get("step") is not None:
        how = f"finite differences of gradients at h = {curv.settings['step']:g}"
    else:
        how = f"finite differences of gradients at h = {curv.settings.get('relative_step', 0.1):g}·‖r(x)‖"
    out = [("Curvature of the boundary", [
        f"At {int(curv.valid.sum())} boundary points, the largest principal curvature (by |κ|) has median "
        f"|κ| = {float(top.abs().median()):.3g} and is positive at {float((top > 0).mean()):.0%} of the points "
        f"({how}; Lanczos with {curv.settings.get('lanczos_steps')} steps).",
        f"Of all top-{curv.k} curvatures, {float((frame.curvature > 0).mean()):.0%} are positive: along those "
        "directions the boundary bends towards the input, so moving along them alone crosses it.",
    ], "curvature")]
    if curv.along is not None:
        along = curv.along_frame()
        parts = [f"{group}: mean κ = {rows.curvature.mean():.3g}, positive at {(rows.curvature > 0).mean():.0%}"
                 for group, rows in along.groupby("group", sort=False)]
        out.append(("Curvature along the principal directions", [
            "Curvature of the boundary along chosen directions (each made tangent at every point): "
            + "; ".join(parts) + ".",
            "Moosavi-Dezfooli et al. (ICLR 2018) tie universal perturbations to directions along which "
            "the boundary is positively curved at many points at once; a larger positive share along "
            "the principal directions than along random ones is that signature.",
        ], "section_curvature"))
    return out


def _geometry_findings(res: dict) -> list[tuple[str, list[str], str | None]]:
    """Margins in DCT subspaces, per-class spectra, the adversarial dimension, curved against flat."""
    out = []
    if "margins" in res:
        found = res["margins"]
        medians = found.median()
        reference = found.settings.get("full_space_median")
        shown = ", ".join(f"{name} (k = {int(k)}): {'none found' if math.isinf(v) else f'{v:.3g}'}"
                          for (name, v), k in zip(medians.items(), found.dims.tolist()))
        out.append(("Margins inside DCT subspaces", [
            f"DeepFool restricted to bands of the 2-D DCT (Ortiz-Jiménez et al. 2020) finds these median margins "
            f"for {found.margin.shape[0]} held-out inputs, from low to high frequency: {shown}.",
            (f"The full-space margin (unclipped, like these) has median {reference:.3g}. " if reference else "")
            + "Large margins in a band mean the model is nearly invariant to those frequencies; small ones, "
            "that it relies on them.",
        ], "subspace_margins"))
    if "classes" in res and res["classes"]:
        specs = res["classes"]
        dims = [spec.summary()["dim_90"] for spec in specs.values()]
        top = [spec.energy(1) for spec in specs.values()]
        out.append(("Spectra per class", [
            f"One spectrum per predicted class ({len(specs)} classes, Jetley et al. 2018): 90% of each class's "
            f"energy lies in {min(dims)} to {max(dims)} dimensions, and its top direction alone holds "
            f"{min(top):.0%} to {max(top):.0%}. The figure shows each class's top principal direction (up to sign).",
        ], "class_directions"))
    if "dimension" in res:
        dim = res["dimension"]
        medians = dim.median().tolist()
        out.append(("Dimension of the adversarial subspace", [
            f"Of up to {int(dim.ks.max())} orthogonal directions aligned with the loss gradient (Tramèr et al. "
            f"2017), the median number along which a step of ε changes the prediction, over "
            f"{dim.dimension.shape[0]} held-out inputs, is "
            + ", ".join(f"{int(m)} at ε = {e:.3g}" for m, e in zip(medians, dim.epsilons.tolist())) + ".",
        ], None))
    if "curved" in res:
        curved = res["curved"]
        parts = [f"{name}: " + ", ".join(f"{r:.0%}" for r in curved.rate[g].tolist())
                 for g, name in enumerate(curved.groups)]
        out.append(("Curved against flat directions", [
            "Steps x ± ε u along tangent directions u of the boundary, at ε = "
            + ", ".join(f"{e:.3g}" for e in curved.epsilons.tolist())
            + f", change the prediction of these shares of {int(curved.valid.sum())} inputs: " + "; ".join(parts)
            + ". A flat boundary is never crossed by a tangent step; a boundary that bends towards the input is "
            "(Fawzi et al. 2018).",
        ], None))
    return out


def render(out: str | Path, *, draw: bool = True) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` (figures inline) into ``out``; returns both paths."""
    out = Path(out)
    if not out.is_dir():
        raise BoundgeoError(f"{out} is not a directory of saved results")
    res = _load(out)  # once, for the figures and the sentences
    info = _run_info(out)
    if draw:
        _draw(out, res, info)
    sections = _findings(res, info)
    md = ["# boundgeo report", ""]
    body = ["<h1>boundgeo report</h1>"]
    notes = [text for text in info.get("notes", {}).values() if text]
    for text in notes:  # first, since they qualify every number below
        sentence = text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")
        md += [f"> **Note:** {sentence}", ""]
        body.append(f"<p style='border-left:4px solid #c0392b;padding-left:.6em'><b>Note:</b> "
                    f"{html.escape(sentence)}</p>")
    for heading, sentences, figure in sections:
        md += [f"## {heading}", ""] + [" ".join(sentences), ""]
        body += [f"<h2>{html.escape(heading)}</h2>", f"<p>{html.escape(' '.join(sentences))}</p>"]
        png = out / f"{figure}.png" if figure else None
        if png is not None and png.exists():
            md += [f"![{heading}]({png.name})", ""]
            data = base64.b64encode(png.read_bytes()).decode()
            body.append(f'<img alt="{html.escape(heading)}" src="data:image/png;base64,{data}" style="max-width:100%">')
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text("\n".join(md) + "\n")
    html_path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>boundgeo report</title>"
        "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto;line-height:1.5}</style>"
        "</head><body>" + "\n".join(body) + "</body></html>\n"
    )
    return md_path, html_path
