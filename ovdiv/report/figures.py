"""Matplotlib figures of the report, each returned as PNG bytes (Agg backend, no display needed).

One consistent style: white background, 9-pt labels, colour-blind-safe palette (tab10 / viridis).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "accuracy_bars",
    "cka_heatmaps",
    "diversity_scatter",
    "saliency_grid",
]

_RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.dpi": 110,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return buf.getvalue()


def accuracy_bars(
    datasets: Sequence[str],
    members: Mapping[str, Sequence[float]],
    ensembles: Mapping[str, Sequence[float]],
    *,
    ylabel: str = "top-1 accuracy",
    intervals: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    interval_label: str = "confidence interval",
) -> bytes:
    """Grouped bars: accuracy per dataset for each member and ensemble (the paper's Fig. 4).

    Args:
        datasets: Dataset specs, the x-axis groups (length D).
        members: Member name -> D accuracies (NaN where missing). Drawn as solid bars.
        ensembles: Ensemble label -> D accuracies. Drawn hatched, after the members.
        ylabel: Y-axis label.
        intervals: Series name -> ``(D lower bounds, D upper bounds)``, drawn as black whiskers on the
            bars (NaN: no whisker for that bar). Series without an entry get none.
        interval_label: What the whiskers are (e.g. "95 % exact binomial (Clopper-Pearson)"), for the title.
    """
    plt = _plt()
    series = [(n, v, False) for n, v in members.items()] + [(n, v, True) for n, v in ensembles.items()]
    with plt.rc_context(_RC):
        width = max(6.0, 0.35 * len(series) * len(datasets) + 2)
        fig, ax = plt.subplots(figsize=(min(width, 14.0), 3.6))
        x = np.arange(len(datasets))
        bw = 0.8 / max(1, len(series))
        ncol = 10 if len(series) <= 10 else 20  # tab20 beyond ten series: no two bars share a colour up to 20
        cmap = plt.get_cmap(f"tab{ncol}")
        whiskers = False
        for j, (name, vals, is_ens) in enumerate(series):
            xs = x - 0.4 + bw * (j + 0.5)
            ys = np.asarray(vals, dtype=float)
            ax.bar(
                xs,
                ys,
                bw,
                label=name,
                color=cmap(j % ncol),
                hatch="//" if is_ens else None,
                edgecolor="black" if is_ens else "none",
                linewidth=0.5,
            )
            if intervals and name in intervals:
                lo, hi = (np.asarray(a, dtype=float) for a in intervals[name])
                ok = np.isfinite(ys) & np.isfinite(lo) & np.isfinite(hi)
                if ok.any():
                    err = np.stack([np.maximum(ys - lo, 0), np.maximum(hi - ys, 0)])[:, ok]
                    ax.errorbar(xs[ok], ys[ok], yerr=err, fmt="none", ecolor="black", elinewidth=0.8, capsize=1.5)
                    whiskers = True
        ax.set_xticks(x, datasets)
        ax.set_ylabel(ylabel)
        if whiskers:
            ax.set_title(f"whiskers: {interval_label}", fontsize=8, loc="right", color="#444")
        ax.set_ylim(0, 1)
        ax.legend(ncol=min(4, len(series)), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
        return _png(fig)


def diversity_scatter(
    panels: Sequence[tuple[str, Any, Any, Any, Any]],
    *,
    title: str,
    ylabel: str = "improvement Δ (ensemble − best member)",
    intervals: tuple[Any, Any] | None = None,
    interval_label: str = "confidence interval",
) -> bytes:
    """Improvement vs diversity scatters (the paper's Fig. 5/6), one panel per diversity metric.

    Args:
        panels: ``(metric name, x values, Δ values, ensemble accuracy, parameter count)`` per panel;
            colour = ensemble accuracy, marker area ∝ parameter count.
        title: Figure title (dataset and consensus).
        ylabel: Y-axis label.
        intervals: ``(lower, upper)`` bounds of Δ, one per ensemble in the panels' order (NaN: none),
            drawn as thin vertical whiskers behind the markers: green when the interval lies above 0,
            red when below, grey when it contains 0. Thinner and fainter for hundreds of ensembles.
        interval_label: What the whiskers are (e.g. "95 % bootstrap interval"), for the title.
    """
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    n = len(panels)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(
            rows, cols, figsize=(3.3 * cols, 2.9 * rows + 0.5), squeeze=False, sharey=True, layout="constrained"
        )
        all_acc = np.concatenate([np.asarray(p[3], dtype=float) for p in panels]) if panels else np.zeros(1)
        vmin, vmax = float(np.nanmin(all_acc)), float(np.nanmax(all_acc))
        if not math.isfinite(vmin) or vmin == vmax:
            vmin, vmax = (vmin if math.isfinite(vmin) else 0.0) - 0.01, (vmax if math.isfinite(vmax) else 1.0) + 0.01
        sc = None
        for k, (name, xs, ys, acc, params) in enumerate(panels):
            ax = axes[k // cols][k % cols]
            p = np.asarray(params, dtype=float)
            p = np.where(np.isfinite(p) & (p > 0), p, np.nan)
            size = 12 + 60 * (p / np.nanmax(p)) if np.isfinite(p).any() else np.full(len(xs), 20.0)
            size = np.where(np.isfinite(size), size, 20.0)
            if intervals is not None:
                _whiskers(ax, np.asarray(xs, dtype=float), intervals)
                if len(xs) > _MANY_WHISKERS:  # small markers, or they hide the whiskers
                    size = size / 4
            sc = ax.scatter(
                xs, ys, c=acc, s=size, cmap="viridis", vmin=vmin, vmax=vmax, alpha=0.85, linewidths=0, zorder=3
            )
            ax.axhline(0.0, color="grey", lw=0.8, ls="--")
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 4), useMathText=True)
            ax.set_xlabel(name)
            if k % cols == 0:
                ax.set_ylabel("Δ")
        for k in range(n, rows * cols):
            axes[k // cols][k % cols].set_visible(False)
        if sc is not None:
            cbar = fig.colorbar(sc, ax=axes.ravel().tolist(), shrink=0.8)
            cbar.set_label("ensemble top-1")
        extra = (
            f"\nwhiskers: {interval_label} of Δ (green: above 0, red: below 0, grey: contains 0)" if intervals else ""
        )
        fig.suptitle(f"{title}: {ylabel}; marker size ∝ parameters{extra}", fontsize=10)
        return _png(fig)


_MANY_WHISKERS = 60


def _whiskers(ax: Any, xs: np.ndarray, intervals: tuple[Any, Any]) -> None:
    """Vertical interval whiskers at ``xs``, coloured by the interval's position relative to 0."""
    lo, hi = (np.asarray(a, dtype=float) for a in intervals)
    ok = np.isfinite(xs) & np.isfinite(lo) & np.isfinite(hi)
    many = ok.sum() > _MANY_WHISKERS
    for mask, colour in ((ok & (lo > 0), "#1a9641"), (ok & (hi < 0), "#d7191c"), (ok & (lo <= 0) & (hi >= 0), "#888")):
        if mask.any():
            ax.vlines(
                xs[mask],
                lo[mask],
                hi[mask],
                colors=colour,
                lw=0.6 if many else 0.9,
                alpha=0.6 if many else 0.8,
                zorder=2,
            )


def saliency_grid(
    images: np.ndarray,
    maps: np.ndarray,
    members: Sequence[str],
    captions: Sequence[str],
    *,
    title: str,
    wrong: Sequence[bool] | None = None,
) -> bytes:
    """Input image and each member's saliency map per sample (the paper's Fig. 2/11).

    Args:
        images: uint8 ``(S, H, W, 3)`` inputs.
        maps: ``(M, S, H', W')`` or ``(M, S, 3, H', W')`` attribution maps (absolute values are
            taken, channels reduced by max, each map scaled to its own max).
        members: The M member names (column titles).
        captions: One caption per sample (row label, e.g. "label 3 / ens 3 ✓"; may hold line breaks).
        title: Figure title.
        wrong: Per sample, whether the ensemble got it wrong: its caption is drawn red and its input
            framed red (None: all captions black).
    """
    plt = _plt()
    maps = np.abs(np.asarray(maps, dtype=np.float32))
    if maps.ndim == 5:
        maps = maps.max(axis=2)
    m, s = maps.shape[:2]
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(
            s, m + 1, figsize=(1.45 * (m + 1) + 0.8, 1.45 * s + 0.7), squeeze=False, layout="constrained"
        )
        for i in range(s):
            bad = bool(wrong[i]) if wrong is not None else False
            axes[i][0].imshow(images[i])
            axes[i][0].set_ylabel(
                captions[i], rotation=0, ha="right", va="center", fontsize=7, color="#c0191d" if bad else "black"
            )
            for j in range(m):
                a = maps[j, i]
                peak = float(a.max())
                axes[i][j + 1].imshow(a / peak if peak > 0 else a, cmap="inferno", vmin=0, vmax=1)
            for ax in axes[i]:
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
            for side in ("left", "right", "top", "bottom"):
                axes[i][0].spines[side].set_visible(bad)
                axes[i][0].spines[side].set_color("#c0191d")
                axes[i][0].spines[side].set_linewidth(2)
        axes[0][0].set_title("input", fontsize=7)
        for j, name in enumerate(members):
            axes[0][j + 1].set_title(_wrap(name), fontsize=7)
        fig.suptitle(title, fontsize=10)
        return _png(fig)


def _wrap(name: str, width: int = 14) -> str:
    """Break a long member name at underscores/pluses so column titles do not overlap."""
    lines: list[str] = []
    cur = ""
    for part in name.replace("+", "+\x00").replace("_", "_\x00").split("\x00"):
        if cur and len(cur) + len(part) > width:
            lines.append(cur)
            cur = part
        else:
            cur += part
    lines.append(cur)
    return "\n".join(lines)


def cka_heatmaps(matrices: Sequence[tuple[str, np.ndarray, Sequence[str]]]) -> bytes:
    """Member x member CKA heatmaps (the paper's Fig. 12), one panel per (dataset, layer).

    Args:
        matrices: ``(panel title, (M, M) matrix, member names)`` per panel.
    """
    plt = _plt()
    n = len(matrices)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    with plt.rc_context({**_RC, "axes.grid": False}):
        fig, axes = plt.subplots(
            rows, cols, figsize=(3.9 * cols + 1.2, 3.7 * rows), squeeze=False, layout="constrained"
        )
        im = None
        for k, (title, mat, names) in enumerate(matrices):
            ax = axes[k // cols][k % cols]
            im = ax.imshow(mat, cmap="magma", vmin=0, vmax=1)
            short = [_wrap(x) for x in names]
            ax.set_xticks(range(len(names)), short, rotation=90, fontsize=6)
            ax.set_yticks(range(len(names)), short if k % cols == 0 else [""] * len(names), fontsize=6)
            for (i, j), v in np.ndenumerate(mat):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < 0.6 else "black")
            ax.set_title(title, fontsize=8)
        for k in range(n, rows * cols):
            axes[k // cols][k % cols].set_visible(False)
        if im is not None:
            fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="linear CKA")
        return _png(fig)
