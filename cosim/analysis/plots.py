"""PNG plots of a traced run, for people learning how paging and a heap behave (matplotlib, Agg backend).

- `tlb_hit_rate.png`: the TLB hit rate over the run (rolling window over the memory operations), with the
  phases (top-level firmware contexts) marked, so the cold start of each phase shows.
- `walk_latency.png`: how long page walks took: page-table entries read per walk (1 when the paging-structure
  cache supplied the upper levels, 4 for a full walk) and, on RTL backends, walk cycles.
- `heap_map.png`: which bytes of the kernel heap the global allocator could hand out (its free regions) and
  which it cannot (live blocks, padding, and what a design does not reuse, such as the bump allocator's freed
  blocks below `next`), over time. It is read from the trace itself by `cosim.analysis.heap`: a shadow of RAM
  built from the STORE events, in which the firmware's own allocator code reads its free regions (as a
  debugger would), after allocator calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cosim.analysis.heap import heap_states
from cosim.analysis.trace import SpanLike
from firmware.allocator import DEFAULT_ALLOCATOR
from hdl.protocol import AccessEvent

HEAP_ROWS = 512  # address bins of a heap map


def pyplot():  # returns matplotlib.pyplot
    """pyplot on the Agg backend, imported late: it costs a second, and only plots need it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _phases(spans: Sequence[SpanLike], end: int) -> list[tuple[int, int, str]]:
    """(start seq, end seq, label) of each phase: top-level spans, consecutive ones with one label merged."""
    base = min((s.depth for s in spans), default=0)
    phases: list[tuple[int, int, str]] = []
    for span in sorted((s for s in spans if s.depth == base), key=lambda s: s.start_seq):
        if phases and phases[-1][2] == span.label:
            phases[-1] = (phases[-1][0], span.end_seq, span.label)
        else:
            phases.append((span.start_seq, span.end_seq, span.label))
    return [(start, min(stop, end), label) for start, stop, label in phases]


def plot_hit_rate(path: Path, events: Sequence[AccessEvent], spans: Sequence[SpanLike], title: str) -> Path:
    """Rolling TLB hit rate against the operation number, each miss marked, on a band per phase."""
    plt = pyplot()
    lookups = [(e.seq, bool(e.tlb_hit)) for e in events if e.tlb_hit or e.tlb_miss]
    last = events[-1].seq + 1 if events else 1
    fig, ax = plt.subplots(figsize=(11, 4.8), layout="constrained")
    phases = _phases(spans, last)
    for i, (start, stop, label) in enumerate(phases):
        ax.axvspan(start, stop, color=("#f2f2f2", "#e3ecf7")[i % 2], zorder=0)
        if len(phases) <= 16:  # staggered so that short neighbouring phases stay readable
            ax.text(start, 118 - 6 * (i % 3), f" {label}", fontsize=8, va="top", color="#333333",
                    clip_on=True)
    if lookups:
        seqs = np.fromiter((s for s, _ in lookups), dtype=np.int64, count=len(lookups))
        hits = np.fromiter((h for _, h in lookups), dtype=np.float64, count=len(lookups))
        window = min(int(min(500, max(10, len(lookups) // 40))), len(lookups))
        rate = np.convolve(hits, np.ones(window) / window, mode="valid")
        ax.plot(seqs[window - 1:], 100 * rate, color="tab:blue", linewidth=1.2,
                label=f"hit rate over the last {window:,} TLB lookups")
        ax.axhline(100 * hits.mean(), color="tab:gray", linewidth=0.8, linestyle=":",
                   label=f"whole run: {100 * hits.mean():.1f} % of {len(lookups):,} lookups")
        ax.vlines(seqs[hits == 0], 0, 4, color="tab:red", linewidth=0.8, label="a TLB miss")
        if seqs[0] > 0:
            ax.text(seqs[0] / 2, 50, "paging off:\nno TLB lookups", ha="center", va="center", fontsize=9,
                    color="#555555")
    else:
        ax.text(0.5, 0.5, "no TLB lookups (paging never enabled)", transform=ax.transAxes, ha="center")
    ax.set_xlim(0, last)
    ax.set_ylim(0, 120)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("operation number (seq); shaded bands are the phases of the run")
    ax.set_ylabel("TLB hit rate (%)")
    ax.set_title(f"TLB hit rate over time — {title}")
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    ax.grid(alpha=0.3, axis="y")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_walk_latency(path: Path, events: Sequence[AccessEvent], title: str, *, estimated: bool) -> Path:
    """Histograms of PTE reads per walk and of walk cycles (`estimated`: by a model without a clock)."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    walks = [e for e in events if e.walk_levels]
    fig, (levels, cycles) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    if walks:
        counts = np.bincount([e.walk_levels for e in walks], minlength=5)[1:]
        from_pwc = np.bincount([e.walk_levels for e in walks if e.pwc_hits], minlength=5)[1:]
        x = np.arange(1, len(counts) + 1)
        levels.bar(x, counts - from_pwc, color="tab:blue", label="walk from CR3")
        levels.bar(x, from_pwc, bottom=counts - from_pwc, color="tab:green",
                   label="walk started from the paging-structure cache")
        levels.set_xticks(x)
        levels.legend(fontsize=8)
        latency = np.array([e.walk_cycles for e in walks])
        bins = np.arange(latency.min(), latency.max() + 2) - 0.5
        cycles.hist(latency, bins=bins if len(bins) <= 80 else 40, color="tab:purple")
        cycles.axvline(latency.mean(), color="black", linestyle="--", linewidth=0.8,
                       label=f"mean {latency.mean():.1f} cycles")
        cycles.legend(fontsize=8)
    for ax in (levels, cycles):
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("walks")
    levels.set_xlabel("page-table entries read by the walk")
    levels.set_title(f"{len(walks):,} page walks")
    note = ", estimated: mem_latency per entry read" if estimated else ""
    cycles.set_xlabel(f"walk latency (cycles{note})")
    cycles.set_title("walk latency")
    fig.suptitle(f"Page walks — {title}")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# -- heap map ------------------------------------------------------------------------------------------------


def plot_heap_map(
    path: Path, events: Sequence[AccessEvent], spans: Sequence[SpanLike], title: str,
    allocator: str = DEFAULT_ALLOCATOR,
) -> Path | None:
    """Heap occupancy over time under the global allocator `allocator` (None, and no file, when the run has no
    heap to show).

    The address axis stops a little above the highest byte ever in use, so a small program's few blocks are
    not lost in an empty 100 KiB heap.
    """
    from matplotlib.ticker import MaxNLocator

    states = heap_states(events, spans, allocator)
    seqs, bottom, size, snapshots = states.seqs, states.bottom, states.size, states.snapshots
    if not seqs:
        return None
    plt = pyplot()
    used = np.ones((len(seqs), size), dtype=bool)  # byte map per snapshot: not in a free region?
    for column, holes in enumerate(snapshots):
        for addr, length in holes:
            used[column, max(addr - bottom, 0):max(addr - bottom + length, 0)] = False
    in_use = np.flatnonzero(used.any(axis=0))
    shown = size if not len(in_use) else min(size, -(-int(in_use[-1] * 1.15 + 64) // 256) * 256)
    rows = min(HEAP_ROWS, shown)
    shown -= shown % rows
    image = used[:, :shown].reshape(len(seqs), rows, -1).mean(axis=2).T
    fig, (heap_ax, use_ax) = plt.subplots(2, 1, figsize=(11, 7), height_ratios=(3, 1), sharex=True,
                                          layout="constrained")
    edges = [*seqs, seqs[-1] + max(1, (seqs[-1] - seqs[0]) // len(seqs))]
    mesh = heap_ax.pcolormesh(edges, np.linspace(0, shown, rows + 1), image, cmap="Blues", vmin=0, vmax=1,
                              shading="flat")
    fig.colorbar(mesh, ax=heap_ax, pad=0.01).set_label("share of the bytes the allocator cannot hand out")
    scope = "all of it" if shown == size else f"its lowest {shown:,} bytes"
    heap_ax.set_ylabel(f"offset from the heap start (bytes)\nheap: {size:,} bytes at {bottom:#x}, {scope}")
    heap_ax.set_title(f"Heap map ({allocator}): in use (dark) and free regions (light) after each allocator "
                      f"call — {title}")
    use_ax.step(seqs, used.sum(axis=1), where="post", color="tab:blue", label="bytes not free")
    use_ax.set_ylabel("bytes not free")
    holes_ax = use_ax.twinx()
    holes_ax.step(seqs, [len(h) for h in snapshots], where="post", color="tab:red", linewidth=0.9,
                  label="free regions")
    holes_ax.set_ylabel("free regions")
    holes_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    use_ax.set_xlabel("operation number (seq)")
    use_ax.legend(handles=[*use_ax.get_lines(), *holes_ax.get_lines()], loc="upper left", fontsize=8)
    use_ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_all(
    out_dir: Path, events: Sequence[AccessEvent], spans: Sequence[SpanLike], title: str, *, backend: str,
    allocator: str | None = DEFAULT_ALLOCATOR,
) -> list[Path]:
    """Every plot of a run on `backend` into `out_dir`; the heap map, of the global allocator `allocator`, only
    when the run has a heap (None: the program has its own allocator, and no heap map is drawn)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        plot_hit_rate(out_dir / "tlb_hit_rate.png", events, spans, title),
        plot_walk_latency(out_dir / "walk_latency.png", events, title, estimated=backend == "reference"),
    ]
    heap_map = None if allocator is None else plot_heap_map(out_dir / "heap_map.png", events, spans, title,
                                                            allocator)
    return [*written, *([heap_map] if heap_map else [])]
