"""Render a report (Markdown and self-contained HTML) from the results saved in a directory.

The report reads only saved results (``.npz`` + ``.json``) and draws the figures from them, so
re-rendering gives the same numbers without recomputing anything. Whatever stages are present
are reported; missing ones are skipped.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from ._errors import BoundgeoError

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
    return _draw(out, _load(out))


def _draw(out: Path, res: dict) -> list[str]:
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
    if "examples" in res:
        save(plot.plot_examples(res["examples"])[0][0], "examples")
    if "normals" in res:
        save(plot.plot_margins(res["normals"]), "margins")
    return drawn


def findings(out: str | Path) -> list[tuple[str, list[str], str | None]]:
    """(heading, sentences, figure name) for every stage whose results are saved in ``out``."""
    return _findings(_load(Path(out)))


def _findings(res: dict) -> list[tuple[str, list[str], str | None]]:
    sections = []
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
        sections.append(("Spectrum of the boundary directions", [
            f"The {spec.n} {kind} in R^{spec.d} hold 90% of their energy Σσ² in "
            f"{summary['dim_90']} dimensions; {spec.n} random unit vectors need {summary['random_dim_90']} "
            f"(concentration {summary['concentration']:.3g}x).",
            f"The top 10 directions hold {spec.energy(min(10, len(spec.singular_values))):.1%} of the energy, "
            f"against {spec.energy(min(10, len(spec.baseline_mean)), baseline=True):.1%} for random vectors; "
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
            sections.append(("Perturbed examples", [
                "Held-out inputs before (top) and after (bottom) adding the universal perturbation, "
                "with the predicted classes."], "examples"))
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
    if draw:
        _draw(out, res)
    sections = _findings(res)
    md = ["# boundgeo report", ""]
    body = ["<h1>boundgeo report</h1>"]
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
