"""Plots of a sweep's table (`cosim.sweep`): the TLB's behaviour against its size, and entries × ways.

Per backend, two PNG files in the sweep folder:

* `curves-<backend>.png`: hit rate, walk cycles per memory operation and cycles per memory operation (rows)
  against TLB entries (log scale), one panel per workload (with its knobs; seeds averaged), one line per
  combination of the other configuration options that vary (ways, policy, PWC, ...). `reference` has no clock,
  so its figure has the hit-rate row only.
* `heatmap-<backend>.png`: TLB entries × ways, one panel per workload, coloured by cycles per memory operation
  (the hit rate on `reference`), averaged over every other option and seed, each cell annotated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.ticker import PercentFormatter

METRICS = (
    ("hit_rate", "TLB hit rate"),
    ("walk_cycles_per_mem_op", "walk cycles / mem op"),
    ("cycles_per_mem_op", "cycles / mem op"),
)


def plot_sweep(mean: Any, config_names: list[str], out: Path) -> list[Path]:
    """Both figures for every backend in `mean` (the finished rows averaged over seeds, `cosim.sweep.averaged`,
    whose configuration columns are `config_names`); the paths written."""
    written: list[Path] = []
    for backend, rows in mean.groupby("backend", sort=False):
        written.append(plot_curves(rows, config_names, out / f"curves-{backend}.png", str(backend)))
        written.append(plot_heatmap(rows, out / f"heatmap-{backend}.png", str(backend)))
    return written


def _line_label(row: Any, varying: list[str]) -> str:
    names = {"tlb_ways": "ways", "tlb_policy": "", "pwc_entries": "PWC", "mem_latency": "latency",
             "mem_bytes": "RAM"}
    parts = []
    for column in varying:
        value = row[column]
        if column == "tlb_ways":
            parts.append("fully assoc." if value == 0 else f"{value}-way")
        elif column == "pwc_entries":
            parts.append("no PWC" if value == 0 else f"PWC {value}")
        else:
            parts.append(f"{names.get(column, column)} {value}".strip())
    return ", ".join(parts) or "default"


def plot_curves(mean: Any, config_names: list[str], path: Path, backend: str) -> Path:
    metrics = [(column, label) for column, label in METRICS if mean[column].notna().any()]
    panels = list(dict.fromkeys(mean["panel"]))
    varying = [c for c in config_names if c != "tlb_entries" and mean[c].nunique() > 1]
    fig, axes = plt.subplots(len(metrics), len(panels), figsize=(4.2 * len(panels), 2.8 * len(metrics)),
                             squeeze=False, sharex=True)
    for col, panel in enumerate(panels):
        rows = mean[mean["panel"] == panel]
        groups = rows.groupby(varying, sort=True) if varying else [((), rows)]
        for number, (_, line) in enumerate(groups):
            line = line.sort_values("tlb_entries")
            label = _line_label(line.iloc[0], varying)
            style = {"marker": "os^vD"[number % 5], "linestyle": ("-", "--", ":", "-.")[number // 5 % 4],
                     "markersize": 4, "alpha": 0.85}  # lines that coincide stay visible
            for row, (column, title) in enumerate(metrics):
                ax = axes[row][col]
                ax.plot(line["tlb_entries"], line[column], label=label, **style)
                ax.set_ylabel(title if col == 0 else "")
                if column == "hit_rate":
                    ax.yaxis.set_major_formatter(PercentFormatter(1.0))  # as many decimals as it takes
                else:
                    ax.ticklabel_format(axis="y", useOffset=False)
        axes[0][col].set_title(panel, fontsize=10)
        sizes = sorted(set(rows["tlb_entries"]))
        for row in range(len(metrics)):
            axes[row][col].set_xscale("log", base=2)
            axes[row][col].set_xticks(sizes, [str(size) for size in sizes])
            axes[row][col].minorticks_off()
            axes[row][col].grid(True, alpha=0.3)
        axes[-1][col].set_xlabel("TLB entries")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if len(labels) > 1:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(f"TLB size sweep on {backend}", fontsize=11)
    fig.tight_layout(rect=(0, 0.06 if len(labels) > 1 else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_heatmap(mean: Any, path: Path, backend: str) -> Path:
    column = "cycles_per_mem_op" if mean["cycles_per_mem_op"].notna().any() else "hit_rate"
    title = "cycles / mem op" if column == "cycles_per_mem_op" else "TLB hit rate"
    panels = list(dict.fromkeys(mean["panel"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        cells = mean[mean["panel"] == panel].pivot_table(index="tlb_ways", columns="tlb_entries", values=column,
                                                         aggfunc="mean")
        image = ax.imshow(cells.to_numpy(dtype=float), aspect="auto", origin="lower",
                          cmap="viridis_r" if column == "cycles_per_mem_op" else "viridis")
        ax.set_xticks(range(len(cells.columns)), [str(c) for c in cells.columns])
        ax.set_yticks(range(len(cells.index)), ["full" if w == 0 else str(w) for w in cells.index])
        for (i, j), value in _cells(cells):
            red, green, blue, _ = image.cmap(image.norm(value))
            ink = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
            ax.text(j, i, f"{value:.3f}" if column == "cycles_per_mem_op" else f"{100 * value:.2f}",
                    ha="center", va="center", fontsize=7, color=ink)
        ax.set_xlabel("TLB entries")
        ax.set_ylabel("ways")
        ax.set_title(panel, fontsize=10)
        bar = fig.colorbar(image, ax=ax, shrink=0.8)
        bar.formatter = PercentFormatter(1.0) if column == "hit_rate" else bar.formatter
        bar.ax.yaxis.set_major_formatter(bar.formatter)
        if column != "hit_rate":
            bar.ax.ticklabel_format(axis="y", useOffset=False)
    fig.suptitle(f"{title} on {backend} (mean over other options and seeds"
                 f"{'; hit rate in %' if column == 'hit_rate' else ''})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cells(cells: Any) -> list[tuple[tuple[int, int], float]]:
    values = cells.to_numpy(dtype=float)
    return [((i, j), values[i, j]) for i in range(values.shape[0]) for j in range(values.shape[1])
            if values[i, j] == values[i, j]]
