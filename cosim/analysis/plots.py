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

The first two are drawn from what `PlotData` gathers as the run streams its events; the heap map samples the ends
of allocator calls, which are known only when the run is over, so it reads the events again from the trace file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cosim.analysis.heap import heap_states_of_batches
from cosim.outputs import guarded, partial_path, remove_quietly
from firmware.allocator import DEFAULT_ALLOCATOR

if TYPE_CHECKING:
    from cosim.stream import EventBatch, SpanCounts

HEAP_ROWS = 512  # address bins of the heap map


def pyplot():  # returns matplotlib.pyplot
    """pyplot on the Agg backend, imported late: it costs a second, and only plots need it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class HitRateSeries:
    """The TLB lookups of a run, for the hit-rate plot (an EventSink).

    Up to EXACT_LOOKUPS lookups are kept as they are, and the plot shows every one. Beyond, the window is fixed
    (MAX_WINDOW), the rolling rate is computed as batches come and kept as the minimum and maximum of each bucket of
    consecutive points (at most 2 * ENVELOPE_BUCKETS buckets, merged in pairs as the run grows), and the misses as
    the buckets of seqs they fall in: a few hundred kilobytes whatever the run's length, and the same picture at
    the plot's resolution.
    """

    EXACT_LOOKUPS = 1_000_000
    MAX_WINDOW = 500
    ENVELOPE_BUCKETS = 20_000
    MISS_BUCKETS = 100_000

    def __init__(self) -> None:
        self.lookups = 0
        self.hits = 0
        self.first_seq: int | None = None
        self.last_seq = -1  # of the last event, lookup or not
        self._seqs: list[np.ndarray] = []  # exact: seqs and hits of the lookups so far
        self._hits: list[np.ndarray] = []
        self._reduced = False
        self._carry = np.empty(0, dtype=np.float64)  # reduced: the last MAX_WINDOW - 1 lookups' hits
        self._envelope = _Envelope(self.ENVELOPE_BUCKETS)
        self._misses = _Buckets(self.MISS_BUCKETS)

    def write(self, batch: EventBatch) -> None:
        columns = batch.columns
        seq = np.asarray(columns["seq"]).astype(np.int64, copy=False)
        hit = np.asarray(columns["tlb_hit"]).astype(np.bool_, copy=False)
        looked_up = hit | np.asarray(columns["tlb_miss"]).astype(np.bool_, copy=False)
        if len(seq):
            self.last_seq = int(seq[-1])
        seqs, hits = seq[looked_up], hit[looked_up]
        if not len(seqs):
            return
        if self.first_seq is None:
            self.first_seq = int(seqs[0])
        self.lookups += len(seqs)
        self.hits += int(hits.sum())
        if self._reduced:
            self._reduce(seqs, hits)
            return
        self._seqs.append(seqs)
        self._hits.append(hits)
        if self.lookups > self.EXACT_LOOKUPS:
            self._reduced = True
            seqs, hits = np.concatenate(self._seqs), np.concatenate(self._hits)
            self._seqs, self._hits = [], []
            self._reduce(seqs, hits)

    def _reduce(self, seqs: np.ndarray, hits: np.ndarray) -> None:
        window = self.MAX_WINDOW
        values = np.concatenate((self._carry, hits.astype(np.float64)))
        sums = np.cumsum(np.concatenate(([0.0], values)))
        rate = (sums[window:] - sums[:-window]) / window  # one per lookup with a full window behind it
        self._envelope.add(seqs[len(seqs) - len(rate):], rate)
        self._carry = values[-(window - 1):]
        self._misses.add(seqs[~hits])

    def exact(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(seqs, hits as 0.0/1.0) of every lookup, when the run is short enough to keep them."""
        if self._reduced:
            return None
        if not self._seqs:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        return np.concatenate(self._seqs), np.concatenate(self._hits).astype(np.float64)


class _Envelope:
    """Points (x ascending, y) kept as the lowest and highest y of each bucket of consecutive points."""

    def __init__(self, buckets: int) -> None:
        self.limit = buckets
        self.size = 1  # points per bucket
        self._pending = (np.empty(0, dtype=np.int64), np.empty(0))
        self.low: list[np.ndarray] = [np.empty((0, 2))]  # (x, y) of each bucket's lowest point
        self.high: list[np.ndarray] = [np.empty((0, 2))]

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        x, y = np.concatenate((self._pending[0], x)), np.concatenate((self._pending[1], y))
        while len(x) > 2 * self.limit * self.size and not any(map(len, self.low)):  # the first points: size them
            self.size *= 2
        whole = len(x) - len(x) % self.size
        self._pending = (x[whole:], y[whole:])
        if whole:
            self._append(x[:whole].reshape(-1, self.size), y[:whole].reshape(-1, self.size))
        while sum(map(len, self.low)) > 2 * self.limit:
            self._merge()

    def _append(self, x: np.ndarray, y: np.ndarray) -> None:
        rows = np.arange(len(x))
        low, high = y.argmin(axis=1), y.argmax(axis=1)
        self.low.append(np.column_stack((x[rows, low], y[rows, low])))
        self.high.append(np.column_stack((x[rows, high], y[rows, high])))

    def _merge(self) -> None:
        low, high = np.concatenate(self.low), np.concatenate(self.high)
        pairs = len(low) // 2 * 2
        x = np.stack((low[:pairs:2, 0], low[1:pairs:2, 0]), axis=1)
        self.low, self.high = [low[pairs:]], [high[pairs:]]  # an odd last bucket stays as it is
        merged_low = np.stack((low[:pairs:2], low[1:pairs:2]), axis=1)
        merged_high = np.stack((high[:pairs:2], high[1:pairs:2]), axis=1)
        rows = np.arange(len(x))
        pick_low = merged_low[rows, merged_low[:, :, 1].argmin(axis=1)]
        pick_high = merged_high[rows, merged_high[:, :, 1].argmax(axis=1)]
        self.low.insert(0, pick_low)
        self.high.insert(0, pick_high)
        self.size *= 2

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """Each bucket's lowest and highest point in x order (the pending points as they are)."""
        low, high = np.concatenate(self.low), np.concatenate(self.high)
        pending = np.column_stack(self._pending)
        both = np.concatenate((np.stack((low, high), axis=1).reshape(-1, 2), pending))
        both = both[np.argsort(both[:, 0], kind="stable")]
        return both[:, 0], both[:, 1]


class _Buckets:
    """Distinct values (ascending batches) rounded down to a multiple of a width that doubles as they grow."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.width = 1
        self._values = np.empty(0, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        self._values = np.unique(np.concatenate((self._values, values // self.width * self.width)))
        while len(self._values) > self.limit:
            self.width *= 2
            self._values = np.unique(self._values // self.width * self.width)

    def values(self) -> np.ndarray:
        return self._values


class WalkHistogram:
    """Page walks by PTE reads (from CR3 or from the paging-structure cache) and by walk cycles (an EventSink)."""

    def __init__(self) -> None:
        self.levels = np.zeros(5, dtype=np.int64)  # walks by walk_levels
        self.from_pwc = np.zeros(5, dtype=np.int64)
        self.cycles = np.zeros(1, dtype=np.int64)  # walks by walk_cycles

    def write(self, batch: EventBatch) -> None:
        levels = np.asarray(batch.columns["walk_levels"]).astype(np.int64)
        walked = levels > 0
        if not walked.any():
            return
        levels = levels[walked]
        pwc = np.asarray(batch.columns["pwc_hits"])[walked] > 0
        cycles = np.asarray(batch.columns["walk_cycles"]).astype(np.int64)[walked]
        self.levels = _add_counts(self.levels, np.bincount(levels))
        self.from_pwc = _add_counts(self.from_pwc, np.bincount(levels[pwc]))
        self.cycles = _add_counts(self.cycles, np.bincount(cycles))

    @property
    def walks(self) -> int:
        return int(self.levels.sum())


def _add_counts(total: np.ndarray, counts: np.ndarray) -> np.ndarray:
    if len(counts) > len(total):
        total = np.concatenate((total, np.zeros(len(counts) - len(total), dtype=np.int64)))
    total[:len(counts)] += counts
    return total


def plot_hit_rate(
    path: Path, series: HitRateSeries, phases: Sequence[tuple[int, int, str]], title: str
) -> Path:
    """Rolling TLB hit rate against the operation number, each miss marked, on a band per phase."""
    plt = pyplot()
    last = series.last_seq + 1 if series.last_seq >= 0 else 1
    fig, ax = plt.subplots(figsize=(11, 4.8), layout="constrained")
    phases = [(start, min(stop, last), label) for start, stop, label in phases]
    for i, (start, stop, label) in enumerate(phases):
        ax.axvspan(start, stop, color=("#f2f2f2", "#e3ecf7")[i % 2], zorder=0)
        if len(phases) <= 16:  # staggered so that short neighbouring phases stay readable
            ax.text(start, 118 - 6 * (i % 3), f" {label}", fontsize=8, va="top", color="#333333",
                    clip_on=True)
    exact = series.exact()
    if series.lookups:
        if exact is not None:
            seqs, hits = exact
            window = min(int(min(series.MAX_WINDOW, max(10, len(seqs) // 40))), len(seqs))
            rate = np.convolve(hits, np.ones(window) / window, mode="valid")
            xs, ys, misses = seqs[window - 1:], rate, seqs[hits == 0]
        else:
            window = series.MAX_WINDOW
            xs, ys = series._envelope.points()
            misses = series._misses.values()
        mean = series.hits / series.lookups if exact is None else hits.mean()
        ax.plot(xs, 100 * ys, color="tab:blue", linewidth=1.2,
                label=f"hit rate over the last {window:,} TLB lookups")
        ax.axhline(100 * mean, color="tab:gray", linewidth=0.8, linestyle=":",
                   label=f"whole run: {100 * mean:.1f} % of {series.lookups:,} lookups")
        ax.vlines(misses, 0, 4, color="tab:red", linewidth=0.8, label="a TLB miss")
        if series.first_seq:
            ax.text(series.first_seq / 2, 50, "paging off:\nno TLB lookups", ha="center", va="center", fontsize=9,
                    color="#555555")
    else:
        ax.text(0.5, 0.5, "no TLB lookups (paging never enabled)", transform=ax.transAxes, ha="center")
    ax.set_xlim(0, last)
    ax.set_ylim(0, 120)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("operation number (seq); shaded bands are the phases of the run")
    ax.set_ylabel("TLB hit rate (%)")
    ax.set_title(f"TLB hit rate over time — {title}")
    if ax.get_legend_handles_labels()[0]:  # nothing to label when paging was never on
        ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    ax.grid(alpha=0.3, axis="y")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_walk_latency(path: Path, walks: WalkHistogram, title: str, *, estimated: bool) -> Path:
    """Histograms of PTE reads per walk and of walk cycles (`estimated`: by a model without a clock)."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, (levels, cycles) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    if walks.walks:
        size = max(len(walks.levels), len(walks.from_pwc))
        counts, from_pwc = (np.pad(c, (0, size - len(c)))[1:] for c in (walks.levels, walks.from_pwc))
        x = np.arange(1, len(counts) + 1)
        levels.bar(x, counts - from_pwc, color="tab:blue", label="walk from CR3")
        levels.bar(x, from_pwc, bottom=counts - from_pwc, color="tab:green",
                   label="walk started from the paging-structure cache")
        levels.set_xticks(x)
        levels.legend(fontsize=8)
        values = np.flatnonzero(walks.cycles)
        weights = walks.cycles[values]
        bins = np.arange(values.min(), values.max() + 2) - 0.5
        cycles.hist(values, bins=bins if len(bins) <= 80 else 40, weights=weights, color="tab:purple")
        mean = float((values * weights).sum() / weights.sum())
        cycles.axvline(mean, color="black", linestyle="--", linewidth=0.8, label=f"mean {mean:.1f} cycles")
        cycles.legend(fontsize=8)
    for ax in (levels, cycles):
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("walks")
    levels.set_xlabel("page-table entries read by the walk")
    levels.set_title(f"{walks.walks:,} page walks")
    note = ", estimated: mem_latency per entry read" if estimated else ""
    cycles.set_xlabel(f"walk latency (cycles{note})")
    cycles.set_title("walk latency")
    fig.suptitle(f"Page walks — {title}")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# -- heap map ------------------------------------------------------------------------------------------------


def plot_heap_map(
    path: Path, batches: Iterable[Mapping[str, np.ndarray]], spans: SpanCounts, title: str,
    allocator: str = DEFAULT_ALLOCATOR,
) -> Path | None:
    """Heap occupancy over time under the global allocator `allocator`, from the run's events in batches (None,
    and no file, when the run has no heap to show).

    The address axis stops a little above the highest byte ever in use, so a small program's few blocks are
    not lost in an empty 100 KiB heap.
    """
    from matplotlib.ticker import MaxNLocator

    states = heap_states_of_batches(batches, spans.allocator_ends, spans.heap_ready, allocator)
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


class PlotData:
    """What the plots need of a run's events, gathered batch by batch (an EventSink); the heap map reads the events
    again afterwards (`plot_all`'s `events`)."""

    def __init__(self) -> None:
        self.hit_rate = HitRateSeries()
        self.walks = WalkHistogram()

    def write(self, batch: EventBatch) -> None:
        self.hit_rate.write(batch)
        self.walks.write(batch)


def plot_all(
    out_dir: Path, data: PlotData, spans: SpanCounts, events: Callable[[], Iterable[Mapping[str, np.ndarray]]],
    title: str, *, backend: str, allocator: str | None = DEFAULT_ALLOCATOR,
) -> list[Path]:  # fmt: skip
    """Every plot of a run on `backend` into `out_dir`, each file written whole (under a temporary name, then
    renamed); the heap map, of the global allocator `allocator`, only when the run has a heap (None: the program
    has its own allocator, and no heap map is drawn). `events()` reads the run's events again, in batches of
    columns (HEAP_COLUMNS at least), for the heap map."""
    written = []
    for name, draw in (
        ("tlb_hit_rate.png", lambda p: plot_hit_rate(p, data.hit_rate, spans.phases, title)),
        ("walk_latency.png", lambda p: plot_walk_latency(p, data.walks, title, estimated=backend == "reference")),
        *([("heap_map.png", lambda p: plot_heap_map(p, events(), spans, title, allocator))] if allocator else []),
    ):
        path = out_dir / name
        partial = partial_path(path).with_suffix(".png")  # matplotlib picks the format by suffix
        try:
            with guarded(path):
                drawn = draw(partial)
            if drawn is not None:
                with guarded(path):
                    os.replace(partial, path)
                written.append(path)
        except BaseException:
            remove_quietly(partial)
            raise
    return written
