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
    from .boundary import BoundaryPoints
    from .categories import RobustnessProfile
    from .curvature import Curvature
    from .spectrum import Spectrum
    from .subspace import SubspaceFooling
    from .universal import PerturbedExamples, UniversalPerturbation

    found = {}
    for name, cls, path in (("spectrum", Spectrum, out / "spectrum"),
                            ("subspace", SubspaceFooling, out / "subspace_fooling"),
                            ("curvature", Curvature, out / "curvature"),
                            ("universal", UniversalPerturbation, out / "universal"),
                            ("profile", RobustnessProfile, out / "profile"),
                            ("examples", PerturbedExamples, out / "examples")):
        if path.with_suffix(".json").exists():
            found[name] = cls.load(path)
    if (out / "normals" / "points" / "meta.json").exists():
        found["normals"] = BoundaryPoints.load(out / "normals")
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
        ], "spectrum"))
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
