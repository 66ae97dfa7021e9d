"""Figures of boundgeo results. The only module that imports matplotlib and seaborn.

Every function takes a result (or several) and ``ax=None``, draws, and returns the Axes; none
computes anything beyond reading the result's fields.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt  # picks a headless backend by itself where there is no display
import numpy as np
import seaborn as sns

from .boundary import BoundaryPoints
from .categories import NAMES, RobustnessProfile
from .curvature import Curvature
from .spectrum import Spectrum
from .subspace import SubspaceFooling


_KIND_LABEL = {"normal": "unit boundary normals", "perturbation": "unit directions r(x)/‖r(x)‖"}


def _axes(ax):
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4))
    return ax


def plot_spectrum(spectrum: Spectrum | Mapping[str, Spectrum], *, ax=None, band: bool = True,
                  marchenko_pastur: bool = True, normalise: bool = False):
    """Singular values σ_i (log scale) of the normals against the random band.

    Args:
        spectrum: one :class:`Spectrum`, or a mapping label → Spectrum to overlay several models.
        band: shade the 5-95% band of the random baseline and draw its mean.
        marchenko_pastur: draw the Marchenko-Pastur prediction.
        normalise: divide by σ_1 of each spectrum (compare shapes across n).
    """
    ax = _axes(ax)
    spectra = dict(spectrum) if isinstance(spectrum, Mapping) else {None: spectrum}
    palette = sns.color_palette("deep", max(len(spectra), 1))
    first = next(iter(spectra.values()))
    scale0 = float(first.singular_values[0]) if normalise else 1.0
    # the reference curves first, so that the models are drawn (and listed) on top of them
    if band and len(first.baseline_mean):
        rindex = np.arange(1, len(first.baseline_mean) + 1)
        ax.fill_between(rindex, first.baseline_low.double().numpy() / scale0,
                        first.baseline_high.double().numpy() / scale0, color="0.6", alpha=0.35, lw=0,
                        label="random unit vectors (5-95%)")
        ax.plot(rindex, first.baseline_mean.double().numpy() / scale0, color="0.35", lw=1, ls="--",
                label="random mean")
    if marchenko_pastur:
        mp = first.marchenko_pastur.double().numpy() / scale0
        ax.plot(np.arange(1, len(mp) + 1), mp, color="0.1", lw=0.8, ls=":", label="Marchenko-Pastur")
    for color, (label, spec) in zip(palette, spectra.items()):
        scale = float(spec.singular_values[0]) if normalise else 1.0
        index = np.arange(1, len(spec.singular_values) + 1)
        ax.plot(index, spec.singular_values.double().numpy() / scale, color=color, lw=2,
                label=label or _KIND_LABEL[spec.kind])
    ax.set_yscale("log")
    # values at rounding level (an affine model's σ_C onwards) would flatten the picture
    top = max(float(s.singular_values[0]) / (float(s.singular_values[0]) if normalise else 1.0)
              for s in spectra.values())
    lows = [float(s.singular_values.min()) / (float(s.singular_values[0]) if normalise else 1.0)
            for s in spectra.values()]
    ax.set_ylim(bottom=max(min(lows), 1e-4 * top) * 0.5)
    ax.set_xlabel("index i")
    ax.set_ylabel("singular value σ_i" + (" / σ_1" if normalise else ""))
    ax.set_title(f"Spectrum of {first.n} {_KIND_LABEL[first.kind]} in R^{first.d}")
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_subspace_fooling(results: SubspaceFooling | Mapping[str, SubspaceFooling], *, ax=None):
    """Fooling rate against radius: random vectors inside the subspace(s) and in the full space.

    Args:
        results: one :class:`SubspaceFooling`, or a mapping label → result (e.g. one per d');
            the full-space curve is drawn once, from the first.
    """
    ax = _axes(ax)
    items = dict(results) if isinstance(results, Mapping) else {None: results}
    palette = sns.color_palette("crest", max(len(items), 1))
    for color, (label, res) in zip(palette, items.items()):
        radii = res.radii.double().numpy()
        sd = res.subspace_rates.double().numpy().std(axis=1)
        mean = res.subspace_rate.double().numpy()
        ax.plot(radii, mean, marker="o", ms=3, color=color, label=label or f"subspace (d'={res.k})")
        ax.fill_between(radii, np.clip(mean - sd, 0, 1), np.clip(mean + sd, 0, 1), color=color, alpha=0.15, lw=0)
    first = next(iter(items.values()))
    radii = first.radii.double().numpy()
    ax.plot(radii, first.full_rate.double().numpy(), marker="s", ms=3, color="0.3", ls="--",
            label=f"full space (d={first.d})")
    ax.set_xlabel(f"radius ({'ℓ2' if first.norm == 'l2' else 'ℓ∞'} norm)")
    ax.set_ylabel("fooling rate")
    ax.set_ylim(0, 1)
    ax.set_title(f"Random vectors on {first.n} held-out inputs")
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_margins(points: BoundaryPoints, *, ax=None, by: str = "label", class_names=None, max_groups: int = 12):
    """Histogram of the DeepFool margins ‖r(x)‖, stacked by ``by``.

    Args:
        by: ``"label"`` (predicted class), ``"target"`` (class across the boundary) or
            ``"true_label"`` (the data's labels, when the points hold them).
        class_names: names for the class indices of ``by``.
        max_groups: with more classes than this among the points, one unstacked histogram
            (a legend of hundreds of classes says nothing).
    """
    ax = _axes(ax)
    frame = points.to_frame()
    frame = frame[frame.converged]
    if by not in frame:
        raise ValueError(f"by must be a column of the points ({', '.join(frame.columns)}), got {by!r}")
    codes = sorted(frame[by].unique())
    if len(codes) > max_groups:
        sns.histplot(frame, x="margin", bins=30, color="C0", ax=ax)
        ax.set_title(f"DeepFool margins of {len(frame)} inputs ({len(codes)} classes)")
    else:
        name = (lambda c: str(class_names[c])) if class_names is not None else str
        frame = frame.assign(**{by: [name(int(c)) for c in frame[by]]})
        sns.histplot(frame, x="margin", hue=by, hue_order=[name(int(c)) for c in codes], multiple="stack",
                     palette="tab10" if len(codes) <= 10 else "tab20", bins=30, ax=ax)
        legend = ax.get_legend()
        if legend is not None:
            legend.set_title({"label": "predicted class", "target": "class across",
                              "true_label": "class (data)"}.get(by, by))
        ax.set_title(f"DeepFool margins of {len(frame)} inputs")
    ax.set_xlabel(f"margin ‖r(x)‖ ({points.norm})")
    return ax


RGB_SCALE = "0.5 + v / (2·max|v|), grey = 0"  # how a signed colour image is shown


def _signed_rgb(image: np.ndarray) -> tuple[np.ndarray, float]:
    """A signed (H, W, 3) image shown in [0, 1] around grey: 0.5 + v / (2·max|v|)."""
    lim = float(np.abs(image).max()) or 1.0
    return 0.5 + 0.5 * image / lim, lim


def plot_directions(directions, *, titles=None, axes=None, ncols: int = 5, cmap: str = "RdBu_r"):
    """Show directions (k, C, H, W) or (k, H, W) as images with a symmetric scale per image.

    Three channels are shown in colour as 0.5 + v / (2·max|v|) (grey is 0, each image on its
    own scale); one channel (or a channel mean otherwise) on the diverging ``cmap``. A figure
    created here says so in its title.

    Args:
        directions: e.g. ``spectrum.basis(10, reshape=True)`` or a universal perturbation.
        titles: one per image.
        axes: an array of Axes to draw into; created when None.

    Returns:
        The array of Axes.
    """
    images = np.asarray(directions.detach().cpu() if hasattr(directions, "detach") else directions, dtype=float)
    if images.ndim == 4:
        images = images.mean(axis=1) if images.shape[1] != 3 else images.transpose(0, 2, 3, 1)
    count = images.shape[0]
    created = axes is None
    if created:
        rows = int(np.ceil(count / ncols))
        _, axes = plt.subplots(rows, min(ncols, count), figsize=(1.6 * min(ncols, count), 1.7 * rows + 0.4),
                               squeeze=False)
    flat_axes = np.ravel(axes)
    for i, ax in enumerate(flat_axes):
        ax.axis("off")
        if i >= count:
            continue
        img = images[i]
        if img.ndim == 3:
            ax.imshow(_signed_rgb(img)[0])
        else:
            lim = np.abs(img).max() or 1.0
            ax.imshow(img, cmap=cmap, vmin=-lim, vmax=lim)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    if created:
        how = (f"RGB shown as {RGB_SCALE}" if images.ndim == 4
               else "blue < 0 < red, symmetric scale")
        flat_axes[0].figure.suptitle(f"{how}, per image", fontsize=8)
    return axes


_CATEGORY_COLORS = {1: "#4c9f70", 2: "#e0b040", 3: "#e07b39", 4: "#c0392b"}


def plot_profile(profile: RobustnessProfile, *, ax=None, bands: bool = True, log_eps: bool = False):
    """The per-image, universal and random rates against ε, with the category bands shaded and
    the transitions ε₂, ε₃, ε₄ marked (dotted lines).

    Read from left to right: below ε₂ no attack finds adversarial perturbations for τ of the data
    (category 1); between ε₂ and ε₃ they exist per image only (2); from ε₃ one universal
    perturbation suffices (3); from ε₄ random perturbations fool (4). The rates are witnessed by
    attacks, so the bands are evidence, not proof.
    """
    ax = _axes(ax)
    eps = profile.epsilons.double().numpy()
    if bands:
        if len(eps) > 1:  # band edges halfway between budgets (geometrically on a log axis)
            mid = np.sqrt(eps[1:] * eps[:-1]) if log_eps else (eps[1:] + eps[:-1]) / 2
            edges = np.concatenate([[eps[0]], mid, [eps[-1]]])
        else:
            edges = np.array([eps[0] * 0.9, eps[0] * 1.1])
        for i, cat in enumerate(profile.category.tolist()):
            ax.axvspan(edges[i], edges[i + 1], color=_CATEGORY_COLORS[cat], alpha=0.13, lw=0)
        for cat in sorted(set(profile.category.tolist())):
            ax.fill_between([], [], color=_CATEGORY_COLORS[cat], alpha=0.3, label=f"category {cat}: {NAMES[cat]}")
    styles = (("per-image", profile.per_image_rate, "o", "C0"), ("universal", profile.universal_rate, "s", "C1"),
              ("random", profile.random_rate, "^", "C3"))
    for name, rates, marker, color in styles:
        ax.plot(eps, rates.double().numpy(), marker=marker, ms=4, color=color, lw=1.8, label=f"{name} rate")
    ax.axhline(profile.threshold, color="0.4", lw=0.8, ls="--")
    for label, value, color in (("ε₂", profile.eps2, "C0"), ("ε₃", profile.eps3, "C1"), ("ε₄", profile.eps4, "C3")):
        if value is not None:
            ax.axvline(value, color=color, lw=1, ls=":")
            ax.annotate(f"{label} = {value:.3g}", (value, 0.97), xycoords=("data", "axes fraction"),
                        rotation=90, ha="right", va="top", fontsize=8, color=color)
    if log_eps:
        ax.set_xscale("log")
    ax.set_xlim(eps[0], eps[-1])
    ax.set_ylim(0, 1.0)
    ax.set_xlabel(f"budget ε ({'ℓ2' if profile.norm == 'l2' else 'ℓ∞'})")
    ax.set_ylabel("share of inputs fooled")
    ax.legend(frameon=False, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    return ax


def plot_curvature(curvature: Curvature, *, ax=None):
    """The principal curvatures by rank (largest |κ| first) across boundary points: a box per
    rank over the signed values, with the points on top. Above zero the boundary bends towards
    the input, so that moving along that direction alone crosses it."""
    ax = _axes(ax)
    frame = curvature.to_frame()
    ranks = sorted(frame["rank"].unique())
    values = [frame.loc[frame["rank"] == r, "curvature"].to_numpy() for r in ranks]
    ax.boxplot(values, positions=ranks, widths=0.6, showfliers=False, patch_artist=True,
               boxprops={"facecolor": "0.88", "edgecolor": "0.4", "linewidth": 0.8},
               medianprops={"color": "0.1"}, whiskerprops={"color": "0.4"}, capprops={"color": "0.4"})
    jitter = np.random.default_rng(0).uniform(-0.25, 0.25, len(frame))  # display only
    positive = frame["curvature"].to_numpy() > 0
    ax.scatter(frame["rank"].to_numpy() + jitter, frame["curvature"], s=4, alpha=0.5, lw=0,
               c=np.where(positive, "C3", "C0"))
    ax.set_xticks(ranks, [str(r) for r in ranks])
    ax.axhline(0, color="0.3", lw=0.8)
    note = _clip_outliers(ax, frame["curvature"].to_numpy(), axis="y")
    if note:
        ax.annotate(note, (0.99, 0.01), xycoords="axes fraction", ha="right", va="bottom", fontsize=7, color="0.4")
    ax.set_xlabel("rank by |κ|")
    ax.set_ylabel("principal curvature κ (1 / input units)")
    how = ("autograd Hessian" if curvature.method == "autograd"
           else f"finite differences, median h = {float(curvature.step[curvature.valid].median()):.3g}")
    ax.set_title(f"Boundary curvature at {int(curvature.valid.sum())} points\n({how})", fontsize=10)
    return ax


def _central_range(values: np.ndarray, keep: float = 0.5) -> tuple[float, float]:
    """The central 100 − 2·keep percent of ``values``; all of them when there are too few for
    that share to hold a whole value (a percentile between two points would cut one of a
    handful off, and a group of one value would vanish from a histogram)."""
    if len(values) * keep / 100 < 1:
        return float(values.min()), float(values.max())
    low, high = np.percentile(values, [keep, 100 - keep])
    return float(low), float(high)


def _clip_outliers(ax, values: np.ndarray, *, axis: str, keep: float = 0.5) -> str:
    """Limit an axis to the central 100 − 2·keep percent of ``values`` (padded), so that a few
    extreme points do not flatten the rest; returns a note saying how many lie outside ("" if none)."""
    low, high = _central_range(values, keep)
    pad = 0.08 * (high - low) or 1.0
    low, high = min(low - pad, -pad), max(high + pad, pad)
    outside = int(((values < low) | (values > high)).sum())
    (ax.set_ylim if axis == "y" else ax.set_xlim)(low, high)
    return f"{outside} of {len(values)} values outside the axis" if outside else ""


def plot_section_curvature(curvature: Curvature, *, ax=None):
    """Distribution of the boundary's curvature along the directions given as ``along=``, one
    curve per group (e.g. the principal directions of the normals against random ones)."""
    ax = _axes(ax)
    frame = curvature.along_frame()
    groups = list(dict.fromkeys(frame["group"]))
    low, high = _central_range(frame["curvature"].to_numpy())
    if high <= low:  # a single value: a bin around it
        low, high = low - (abs(low) * 0.1 or 1.0), high + (abs(high) * 0.1 or 1.0)
    sns.histplot(frame, x="curvature", hue="group", hue_order=groups, element="step", stat="density",
                 common_norm=False, bins=np.linspace(low, high, 50), palette=sns.color_palette("deep", len(groups)),
                 ax=ax)
    note = _clip_outliers(ax, frame["curvature"].to_numpy(), axis="x")
    for color, group in zip(sns.color_palette("deep", len(groups)), groups):
        ax.axvline(float(frame.loc[frame.group == group, "curvature"].mean()), color=color, lw=1.2, ls="--")
    sns.move_legend(ax, "upper left", frameon=False, fontsize=7, title=None)
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_xlabel("curvature along the direction κ(u) (dashed: means)" + (f"\n{note}" if note else ""))
    ax.set_title(f"Curvature along chosen directions\nat {int(curvature.valid.sum())} boundary points", fontsize=10)
    return ax


def plot_regions_2d(toy, *, ax=None, resolution: int = 300, category=None):
    """A 2-D classifier's regions with its data, like the figures of the four categories.

    Args:
        toy: a :class:`boundgeo.toys.Toy` with 2-D inputs (or any object with ``model``, ``x``,
            ``window``, ``eps`` and ``name``).
        resolution: grid points per axis.
        category: a measured :class:`~boundgeo.Category` to put in the title.

    The model is evaluated on a grid here: drawing a decision region needs its values, which no
    result holds. Each input is drawn with a circle of radius ε (the budget).
    """
    import torch
    from matplotlib.patches import Circle

    if toy.x.shape[1] != 2:
        raise ValueError(f"plot_regions_2d draws 2-D toys; this one has {toy.x.shape[1]} dimensions")
    ax = _axes(ax)
    x0, x1, y0, y1 = toy.window
    gx, gy = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
    grid = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)
    with torch.no_grad():
        labels = torch.cat([toy.model(chunk).argmax(1) for chunk in grid.split(20000)]).numpy()
    ax.contourf(gx, gy, labels.reshape(gx.shape), levels=[-0.5, 0.5, 1.5], colors=["#d6e4f0", "#f4d6c6"])
    ax.contour(gx, gy, labels.reshape(gx.shape), levels=[0.5], colors="0.3", linewidths=0.8)
    with torch.no_grad():
        data_labels = toy.model(toy.x).argmax(1).numpy()
    pts = toy.x.numpy()
    ax.scatter(pts[:, 0], pts[:, 1], c=np.where(data_labels == 0, "#1f5f99", "#a0441a"), s=6, zorder=3)
    for p in pts:
        ax.add_patch(Circle(p, toy.eps, fill=False, lw=0.4, color="0.2", alpha=0.6))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    title = f"{toy.name}: built as category {toy.category} at ε={toy.eps:.3g}"
    if category is not None:
        title += f"\nmeasured: category {category.value}"
    ax.set_title(title, fontsize=9)
    return ax


def plot_perturbation(perturbation, *, ax=None, cmap: str = "RdBu_r", title: str | None = None):
    """A perturbation (a :class:`~boundgeo.UniversalPerturbation` or a tensor of one input's
    shape) as an image on a symmetric scale, with its norm in the title.

    Three channels are shown in colour as 0.5 + v / (2·max|v|) (grey is 0), and the title
    states max|v|; one channel on the diverging ``cmap`` with a colour bar.
    """
    from .universal import UniversalPerturbation

    ax = _axes(ax)
    v = perturbation.perturbation if isinstance(perturbation, UniversalPerturbation) else perturbation
    image = np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=float)
    if image.ndim == 3:
        image = image.mean(axis=0) if image.shape[0] != 3 else image.transpose(1, 2, 0)
    scale = ""
    if image.ndim == 3:
        shown, lim = _signed_rgb(image)
        ax.imshow(shown)
        scale = f"RGB shown as {RGB_SCALE}, max|v| = {lim:.3g}"
    else:
        lim = np.abs(image).max() or 1.0
        shown = ax.imshow(image, cmap=cmap, vmin=-lim, vmax=lim)
        ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    ax.axis("off")
    if title is None and isinstance(perturbation, UniversalPerturbation):
        title = (f"universal perturbation ({perturbation.method}), ‖v‖ ≤ {perturbation.xi:.3g} "
                 f"({perturbation.norm})\nfooling rate {perturbation.fooling_rate:.1%}"
                 + (f", held-out {perturbation.eval_fooling_rate:.1%}"
                    if perturbation.eval_fooling_rate is not None else ""))
    title = "\n".join(t for t in (title, scale) if t)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_examples(examples, *, axes=None, class_names=None, true_names=None):
    """Inputs before and after a perturbation, with the predicted labels (the paper's Figure 1).

    Args:
        examples: a :class:`~boundgeo.PerturbedExamples`.
        axes: a (2, k) array of Axes; created when None.
        class_names: names for the predicted class indices.
        true_names: the data's class of each example, shown above its prediction (for
            instance when the model's classes are not the data's).

    Returns:
        The (2, k) array of Axes: clean inputs on top, perturbed ones below; a prediction that
        the perturbation changed is red.
    """
    k = len(examples.before)
    if axes is None:
        _, axes = plt.subplots(2, k, figsize=(max(1.5 * k, 2.6), 3.4 + 0.3 * (true_names is not None)),
                               squeeze=False)
    name = (lambda c: str(class_names[c])) if class_names is not None else str
    for row, (images, labels) in enumerate(((examples.clean, examples.before), (examples.perturbed, examples.after))):
        for i in range(k):
            ax = axes[row][i]
            img = np.asarray(images[i], dtype=float)
            if img.ndim == 3 and img.shape[0] == 3:
                ax.imshow(img.transpose(1, 2, 0).clip(0, 1))
            else:
                ax.imshow(img.reshape(img.shape[-2:]), cmap="gray", vmin=0, vmax=1)
            changed = row == 1 and int(examples.after[i]) != int(examples.before[i])
            text = name(int(labels[i]))
            if true_names is not None:  # then the true class above the first prediction
                text = f"{true_names[i]}\npred {text}" if row == 0 else f"pred {text}"
            ax.set_title(text, fontsize=8 if true_names is not None else 9,
                         color="#c0392b" if changed else "black")
            ax.axis("off")
    axes[0][0].text(-0.15, 0.5, "clean", transform=axes[0][0].transAxes, rotation=90, va="center", ha="right")
    axes[1][0].text(-0.15, 0.5, "+ v", transform=axes[1][0].transAxes, rotation=90, va="center", ha="right")
    return axes


def plot_transfer(frame, *, ax=None, cmap: str = "rocket_r", title: str | None = None):
    """A transfer matrix (:func:`~boundgeo.transfer_matrix`) as an annotated heat map: one row per
    perturbation, one column per model it is tested on, fooling rates in percent (the paper's
    Table 2). The diagonal, where a perturbation meets the model it was computed on, is outlined.
    """
    ax = _axes(ax)
    values = 100 * np.asarray(frame, dtype=float)
    sns.heatmap(values, ax=ax, annot=True, fmt=".0f", cmap=cmap, vmin=0, vmax=100, square=True,
                cbar_kws={"label": "fooling rate (%)"}, xticklabels=list(frame.columns),
                yticklabels=list(frame.index))
    columns = list(frame.columns)
    for i, name in enumerate(frame.index):
        if name in columns:
            ax.add_patch(plt.Rectangle((columns.index(name), i), 1, 1, fill=False, lw=2, ec="black"))
    ax.set_xlabel(frame.columns.name or "fooling rate on")
    ax.set_ylabel(frame.index.name or "perturbation from")
    ax.tick_params(axis="x", rotation=30)
    ax.tick_params(axis="y", rotation=0)
    if title:
        ax.set_title(title, fontsize=10)
    return ax
