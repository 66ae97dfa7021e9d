"""Figures of boundgeo results. The only module that imports matplotlib and seaborn.

Every function takes a result (or several) and ``ax=None``, draws, and returns the Axes; none
computes anything beyond reading the result's fields and deciding how to show them (where a
rate crosses τ, whether two drawn curves can be told apart). Each role has one colour in every
figure, :data:`COLORS`; a legend lists only what can be seen.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import matplotlib.pyplot as plt  # picks a headless backend by itself where there is no display
import numpy as np
import seaborn as sns
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextToPath

from .attacks.boundary import BoundaryPoints
from .geometry.categories import NAMES, RobustnessProfile, category_of
from .geometry.curvature import Curvature
from .geometry.margins import SubspaceMargins
from .geometry.spectral import Spectrum
from .geometry.subspace import SubspaceFooling

_KIND_LABEL = {"normal": "unit boundary normals", "perturbation": "unit directions r(x)/‖r(x)‖"}

COLORS = {
    "principal": "#8e44ad",  # principal directions of the normals and the subspaces they span
    "random": "#7f7f7f",  # random directions: the baseline every figure compares with
    "universal": "#e67e22",  # universal perturbations
    "per_image": "#2471a3",  # per-image (DeepFool) perturbations
    "marchenko_pastur": "#117a65",  # the Marchenko-Pastur prediction
}
"""One colour per role, the same in every figure (and in the analysis scripts' own figures)."""

_ROLE_WORDS = (("principal", "principal"), ("random", "random"), ("universal", "universal"),
               ("per-image", "per_image"), ("per_image", "per_image"), ("per image", "per_image"))


def role_color(name: str, default=None):
    """The :data:`COLORS` entry of the role that ``name`` names ("top-10 principal directions"
    → ``COLORS["principal"]``), or ``default`` when it names none of them."""
    lowered = str(name).lower()
    for word, role in _ROLE_WORDS:
        if word in lowered:
            return COLORS[role]
    return default


def _points_per_pixel(ax) -> float:
    return 72.0 / ax.figure.dpi


def _widest_gap(ax, x, low, high) -> float:
    """The widest vertical distance, in points, between two curves over ``x`` as drawn now."""
    x, low, high = (np.asarray(a, dtype=float) for a in (x, low, high))
    keep = np.isfinite(low) & np.isfinite(high)
    if ax.get_yscale() == "log":
        keep &= (low > 0) & (high > 0)
    if not keep.any():
        return 0.0
    to_display = ax.transData.transform
    y_low = to_display(np.column_stack([x[keep], low[keep]]))[:, 1]
    y_high = to_display(np.column_stack([x[keep], high[keep]]))[:, 1]
    return float(np.abs(y_high - y_low).max()) * _points_per_pixel(ax)


def _axes(ax):
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4))
    return ax


def plot_spectrum(spectrum: Spectrum | Mapping[str, Spectrum], *, ax=None, band: bool = True,
                  marchenko_pastur: bool = True, normalise: bool = False):
    """Singular values σ_i (log scale) of the normals against the random band.

    The legend lists only what can be seen: the 5-95% band of the random draws is shaded and
    listed where it is wider than the mean's line (otherwise the mean's entry says that it is
    narrower), and a Marchenko-Pastur line that lies on the random mean is drawn dash-dotted
    and listed as coinciding with it.

    Args:
        spectrum: one :class:`Spectrum`, or a mapping label → Spectrum to overlay several models.
        band: draw the mean of the random baseline, and shade its 5-95% band where that is
            wider than the mean's line.
        marchenko_pastur: draw the Marchenko-Pastur prediction.
        normalise: divide by σ_1 of each spectrum (compare shapes across n).
    """
    ax = _axes(ax)
    spectra = dict(spectrum) if isinstance(spectrum, Mapping) else {None: spectrum}
    palette = sns.color_palette("deep", max(len(spectra), 1))
    first = next(iter(spectra.values()))
    scale0 = float(first.singular_values[0]) if normalise else 1.0
    # a broad pale random mean with a thin Marchenko-Pastur line along its middle: both stay
    # visible where they coincide, as they do for n random unit vectors
    mean_lw, mp_lw = 3.0, 1.0
    mean_line = fill = mp_line = None
    if band and len(first.baseline_mean):
        rindex = np.arange(1, len(first.baseline_mean) + 1)
        mean = first.baseline_mean.double().numpy() / scale0
        low, high = first.baseline_low.double().numpy() / scale0, first.baseline_high.double().numpy() / scale0
        fill = ax.fill_between(rindex, low, high, color=COLORS["random"], alpha=0.35, lw=0, zorder=1)
        mean_line, = ax.plot(rindex, mean, color=COLORS["random"], lw=mean_lw, alpha=0.55,
                             solid_capstyle="butt", zorder=2)
    if marchenko_pastur:
        mp = first.marchenko_pastur.double().numpy() / scale0
        mp_line, = ax.plot(np.arange(1, len(mp) + 1), mp, color=COLORS["marchenko_pastur"], lw=mp_lw,
                           ls=(0, (6, 2, 1, 2)), zorder=2)
    for color, (label, spec) in zip(palette, spectra.items()):
        scale = float(spec.singular_values[0]) if normalise else 1.0
        index = np.arange(1, len(spec.singular_values) + 1)
        ax.plot(index, spec.singular_values.double().numpy() / scale, color=color, lw=2, zorder=3,
                label=label or _KIND_LABEL[spec.kind])
    ax.set_yscale("log")
    # values at rounding level (an affine model's σ_C onwards) would flatten the picture
    top = max(float(s.singular_values[0]) / (float(s.singular_values[0]) if normalise else 1.0)
              for s in spectra.values())
    lows = [float(s.singular_values.min()) / (float(s.singular_values[0]) if normalise else 1.0)
            for s in spectra.values()]
    ax.set_ylim(bottom=max(min(lows), 1e-4 * top) * 0.5)
    # whether the eye can tell the reference curves apart, measured in points on the axes as
    # they now stand; the legend lists only what it can
    references = []
    draws = first.settings.get("baseline_draws")
    over = f" over {draws} draws" if draws else ""
    if mean_line is not None:
        wide = _widest_gap(ax, rindex, low, high) > mean_lw + 2.0  # a point beyond the line on either side
        if wide:
            references.append((plt.Rectangle((0, 0), 1, 1, color=COLORS["random"], alpha=0.35, lw=0),
                               f"random unit vectors, 5-95%{over}"))
        else:
            fill.remove()
        references.append((mean_line, f"random unit vectors, mean{over}"
                           + ("" if wide else "\n(their 5-95% band is narrower than this line)")))
    if mp_line is not None:
        label = "Marchenko-Pastur prediction"
        if mean_line is not None:
            common = min(len(mp), len(mean))
            if _widest_gap(ax, rindex[:common], mp[:common], mean[:common]) < (mean_lw + mp_lw) / 2:
                label += "\n(lies on the random mean)"  # the thin line runs inside the broad one
        references.append((mp_line, label))
    ax.set_xlabel("index i")
    ax.set_ylabel("singular value σ_i" + (" / σ_1" if normalise else ""))
    ax.set_title(f"Spectrum of {first.n} {_KIND_LABEL[first.kind]} in R^{first.d}")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend([h for h, _ in references] + handles, [t for _, t in references] + labels,
              frameon=False, fontsize=8)
    return ax


def plot_subspace_fooling(results: SubspaceFooling | Mapping[str, SubspaceFooling], *, ax=None):
    """Fooling rate against radius: random vectors inside the subspace(s) and in the full space.

    Each curve is the mean fooling rate over the draws, shaded ±1 standard deviation of the
    per-draw rates (the spread between draws, not a confidence interval of the mean); the
    legend says so.

    Args:
        results: one :class:`SubspaceFooling`, or a mapping label → result (e.g. one per d');
            the full-space curve is drawn once, from the first.
    """
    ax = _axes(ax)
    items = dict(results) if isinstance(results, Mapping) else {None: results}
    # the subspaces are spanned by principal directions: shades of that colour, darker for larger d'
    palette = ([COLORS["principal"]] if len(items) == 1
               else sns.light_palette(COLORS["principal"], len(items) + 2)[2:])
    first = next(iter(items.values()))
    curves = [(label or f"subspace (d'={res.k})", res.radii, res.subspace_rate, res.subspace_rates, color, "o", "-")
              for color, (label, res) in zip(palette, items.items())]
    curves.append((f"full space (d={first.d})", first.radii, first.full_rate, first.full_rates, COLORS["random"],
                   "s", "--"))
    spreads = []
    for label, radii, mean, rates, color, marker, ls in curves:
        radii, mean = radii.double().numpy(), mean.double().numpy()
        sd = rates.double().numpy().std(axis=1)
        ax.plot(radii, mean, marker=marker, ms=3, color=color, ls=ls, label=label)
        spreads.append((radii, np.clip(mean - sd, 0, 1), np.clip(mean + sd, 0, 1), color))
    ax.set_xlabel(f"radius ({'ℓ2' if first.norm == 'l2' else 'ℓ∞'} norm)")
    ax.set_ylabel("fooling rate")
    ax.set_ylim(0, 1)
    ax.set_title(f"Random vectors on {first.n} held-out inputs")
    handles, labels = ax.get_legend_handles_labels()
    draws = first.subspace_rates.shape[1]
    shown = False
    for radii, low, high, color in spreads:
        if _widest_gap(ax, radii, low, high) > 1.0:  # a band under the line would not be seen
            ax.fill_between(radii, low, high, color=color, alpha=0.15, lw=0)
            shown = True
    if shown:
        how = "an independent vector per input" if first.independent else "one vector shared by all inputs"
        handles.append(plt.Rectangle((0, 0), 1, 1, color="0.5", alpha=0.3, lw=0))
        labels.append(f"shaded: ±1 s.d. of the rate over {draws} draws\n({how} per draw)")
    ax.legend(handles, labels, frameon=False, fontsize=8)
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


def plot_subspace_margins(results: SubspaceMargins | Mapping[str, SubspaceMargins], *, ax=None,
                          reference: Mapping[str, float] | float | None = None, log: bool = True):
    """Median margin per subspace (in the order measured) with the quartiles shaded, as in
    "Hold me tight!" (Ortiz-Jiménez et al. 2020): low to high DCT frequency on the x axis.

    Subspaces where fewer than half the inputs found a margin have an infinite median: they are
    marked with a triangle at the top edge ("none found within max_iter"), never drawn as a value.

    Args:
        results: one result, or name → result (e.g. one per model) drawn side by side.
        reference: the median full-space DeepFool margin (one number, or name → number), drawn
            as a dashed line: a subspace's margin is never below it.
        log: a logarithmic margin axis (margins grow by orders of magnitude with frequency).
    """
    ax = _axes(ax)
    named = {"": results} if isinstance(results, SubspaceMargins) else dict(results)
    if not named:
        raise ValueError("no result to plot")
    order = list(next(iter(named.values())).subspaces)
    positions = np.arange(len(order))
    none_found = []
    for i, (name, result) in enumerate(named.items()):
        if list(result.subspaces) != order:
            raise ValueError(f"the results measure different subspaces: {list(result.subspaces)} and {order}")
        table = result.summary_frame()
        color = f"C{i}" if len(named) > 1 else COLORS["per_image"]
        median = table["median"].to_numpy(float)
        low, high = table["q25"].to_numpy(float), table["q75"].to_numpy(float)
        finite = np.isfinite(median)
        label = (name + ": " if name else "") + f"median of {result.margin.shape[0]} inputs"
        ax.plot(positions[finite], median[finite], "o-", color=color, label=label)
        band = np.isfinite(low) & np.isfinite(high)
        ax.fill_between(positions, np.where(band, low, np.nan), np.where(band, high, np.nan), color=color,
                        alpha=0.2, linewidth=0, label="quartiles" if i == 0 else None)
        none_found += [(p, color) for p in positions[~finite]]
        ref = reference.get(name) if isinstance(reference, Mapping) else reference
        if ref is not None:
            ax.axhline(float(ref), color=color, linestyle="--", linewidth=1,
                       label=(name + ": " if name else "") + "full space (DeepFool)")
    if log:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 2, 5, 10 rather than 2×10⁰
        ax.yaxis.set_minor_formatter(NullFormatter())
    if none_found:
        top = ax.get_ylim()[1]
        for p, color in none_found:
            ax.plot([p], [top], marker="^", color=color, clip_on=False, linestyle="none")
        ax.plot([], [], marker="^", color="0.3", linestyle="none", label="no margin within max_iter")
    dims = next(iter(named.values())).dims.tolist()
    ax.set_xticks(positions)
    ax.set_xticklabels([f"{s}\n({k})" for s, k in zip(order, dims)], fontsize=8)
    ax.set_xlabel("subspace (dimension)")
    ax.set_ylabel("margin ‖r‖₂ inside the subspace")
    ax.legend(fontsize=8)
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


def _category_spans(profile: RobustnessProfile) -> list[tuple[float, float, int]]:
    """(start, end, category) pieces of the budget axis, cut where a rate crosses τ.

    The rates are read as the profile reads them for ε₂, ε₃, ε₄ (linear between budgets), so
    that the first crossings are exactly the reported transitions and the category of every
    piece is the profile's at each budget inside it.
    """
    eps = profile.epsilons.double().numpy()
    tau = profile.threshold
    rates = [r.double().numpy() for r in (profile.per_image_rate, profile.universal_rate, profile.random_rate)]
    if len(eps) == 1:
        return [(eps[0] * 0.9, eps[0] * 1.1, int(profile.category[0]))]
    cuts = {float(eps[0]), float(eps[-1])}
    for r in rates:
        for k in range(1, len(eps)):
            if (r[k - 1] >= tau) != (r[k] >= tau):  # the formula of categories.transition
                cuts.add(float(eps[k - 1] + (tau - r[k - 1]) * (eps[k] - eps[k - 1]) / (r[k] - r[k - 1])))
    cuts = sorted(cuts)
    spans: list[tuple[float, float, int]] = []
    for start, end in zip(cuts[:-1], cuts[1:]):
        if end <= start:
            continue
        middle = (start + end) / 2
        cat = category_of(*(float(np.interp(middle, eps, r)) for r in rates), tau)
        if spans and spans[-1][2] == cat:
            spans[-1] = (spans[-1][0], end, cat)
        else:
            spans.append((start, end, cat))
    return spans


def _label_rows(ax, values, labels, fontsize: float) -> list[int]:
    """A row for the label of each tick at ``values`` (0 nearest the axes): a label that would
    touch one to its left in the same row moves up a row."""
    to_axes = ax.transAxes.inverted().transform
    x = [float(to_axes(ax.transData.transform((v, 0.5)))[0]) for v in values]
    width_pt = ax.get_window_extent().width * _points_per_pixel(ax)
    row_end: dict[int, float] = {}  # row → right end (axes fraction) of its last label
    rows = [0] * len(values)
    for i in sorted(range(len(values)), key=lambda j: x[j]):
        text_pt = TextToPath().get_text_width_height_descent(labels[i], FontProperties(size=fontsize), False)[0]
        half = (text_pt / 2 + 2) / max(width_pt, 1.0)  # 2 points apart at least
        row = 0
        while row in row_end and x[i] - half < row_end[row]:
            row += 1
        row_end[row] = x[i] + half
        rows[i] = row
    return rows


def plot_profile(profile: RobustnessProfile, *, ax=None, bands: bool = True, log_eps: bool = False):
    """The per-image, universal and random rates against ε, with the category bands shaded and
    the transitions ε₂, ε₃, ε₄ marked (dotted lines, named above the axes).

    Read from left to right: below ε₂ no attack finds adversarial perturbations for τ of the data
    (category 1); between ε₂ and ε₃ they exist per image only (2); from ε₃ one universal
    perturbation suffices (3); from ε₄ random perturbations fool (4). The shading changes
    exactly where a rate crosses τ, so at the reported ε₂, ε₃, ε₄ (and, should the random rate
    fall below τ again at a larger budget, there too). A transition not reached on the grid is
    named above the axes as "not reached", not drawn. The rates are witnessed by attacks, so the
    bands are evidence, not proof.
    """
    ax = _axes(ax)
    eps = profile.epsilons.double().numpy()
    if log_eps:
        ax.set_xscale("log")
    if len(eps) > 1:
        ax.set_xlim(eps[0], eps[-1])
    else:
        ax.set_xlim(eps[0] * 0.9, eps[0] * 1.1)
    ax.set_ylim(0, 1.0)
    if bands:
        spans = _category_spans(profile)
        for start, end, cat in spans:
            ax.axvspan(start, end, color=_CATEGORY_COLORS[cat], alpha=0.13, lw=0)
        for cat in sorted({cat for _, _, cat in spans}):
            ax.fill_between([], [], color=_CATEGORY_COLORS[cat], alpha=0.3, label=f"category {cat}: {NAMES[cat]}")
    styles = (("per-image", profile.per_image_rate, "o", COLORS["per_image"]),
              ("universal", profile.universal_rate, "s", COLORS["universal"]),
              ("random", profile.random_rate, "^", COLORS["random"]))
    for name, rates, marker, color in styles:
        ax.plot(eps, rates.double().numpy(), marker=marker, ms=4, color=color, lw=1.8, label=f"{name} rate")
    ax.axhline(profile.threshold, color="0.15", lw=0.8, ls="--", label=f"τ = {profile.threshold:g}")
    marks, missing = [], []
    for label, value, rates, color in (("ε₂", profile.eps2, profile.per_image_rate, COLORS["per_image"]),
                                       ("ε₃", profile.eps3, profile.universal_rate, COLORS["universal"]),
                                       ("ε₄", profile.eps4, profile.random_rate, COLORS["random"])):
        if value is None:
            missing.append(label)
            continue
        ax.axvline(value, color=color, lw=1.2, ls=":")
        # a rate at τ already at the first budget: the transition lies at or below it
        below = value == eps[0] and float(rates[0]) >= profile.threshold
        marks.append((value, f"{label} {'≤' if below else '='} {value:.3g}", color))
    # the names sit above the axes, as tick labels of x axes on top, where no curve runs (and a
    # title set later moves up past them); close ones are stacked in rows, one axis per row
    size = 8
    rows = _label_rows(ax, [v for v, _, _ in marks], [t for _, t, _ in marks], size) if marks else [0]
    tops = []
    for row in range(max(rows) + 1):
        top = ax.secondary_xaxis("top")
        top.tick_params(axis="x", which="both", length=3, labelsize=size, pad=1 + 1.25 * size * row)
        top.xaxis.set_minor_locator(plt.NullLocator())
        mine = [m for m, r in zip(marks, rows) if r == row]
        top.set_xticks([v for v, _, _ in mine], [t for _, t, _ in mine])
        for text, (_, _, color) in zip(top.get_xticklabels(), mine):
            text.set_color(color)
        tops.append(top)
    if missing:
        tops[-1].set_xlabel(f"{', '.join(missing)} not reached on the grid (> {eps[-1]:.3g})", fontsize=size,
                            labelpad=2)
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


def plot_section_curvature(curvature: Curvature, *, ax=None, colors: Mapping[str, str] | None = None):
    """Distribution of the boundary's curvature along the directions given as ``along=``, one
    curve per group (e.g. the principal directions of the normals against random ones).

    Args:
        colors: group → colour. By default a group whose name says "principal", "random",
            "universal" or "per-image" takes that role's :data:`COLORS` entry (the same as in
            every other figure), any other group a colour of the "deep" palette.
    """
    ax = _axes(ax)
    frame = curvature.along_frame()
    groups = list(dict.fromkeys(frame["group"]))
    deep = sns.color_palette("deep", 10)  # without its blue, orange, purple and grey, which roles hold
    spare = itertools.cycle([deep[i] for i in (2, 3, 5, 6, 8, 9)])
    given = dict(colors or {})
    palette = {g: given[g] if g in given else role_color(g) or next(spare) for g in groups}
    low, high = _central_range(frame["curvature"].to_numpy())
    if high <= low:  # a single value: a bin around it
        low, high = low - (abs(low) * 0.1 or 1.0), high + (abs(high) * 0.1 or 1.0)
    sns.histplot(frame, x="curvature", hue="group", hue_order=groups, element="step", stat="density",
                 common_norm=False, bins=np.linspace(low, high, 50), palette=palette, ax=ax)
    note = _clip_outliers(ax, frame["curvature"].to_numpy(), axis="x")
    for group in groups:
        ax.axvline(float(frame.loc[frame.group == group, "curvature"].mean()), color=palette[group], lw=1.2, ls="--")
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
    from .attacks.universal import UniversalPerturbation

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
