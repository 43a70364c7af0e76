"""Run one workload once per global allocator and compare what each design cost and left behind.

`compare_allocators("many_boxes", n=2000)` runs the workload traced on one backend with each allocator of
`firmware.allocator.ALLOCATORS` (the firmware entry points take `allocator=`) and measures, per allocator:

- calls: the `alloc(...)` and `dealloc(...)` contexts the allocator opened (a default `realloc` is one alloc,
  a copy and one dealloc; its alloc and dealloc count here, the copy does not);
- per alloc and per dealloc: memory operations (loads and stores, the allocator's own traffic including its
  spinlock and its fallback); per alloc: TLB hits, misses and page walks, and cycles (from the cycle before
  the call's first operation to its last operation's response; the `reference` model's clock ticks once per
  operation, so there cycles are operations, and the RTL backends give real cycles);
- heap pages: the distinct 4 KiB pages of the heap touched by allocator calls, and by the whole run;
- the final free state, read from the RAM the trace left (`cosim.analysis.heap`, which the heap map of
  `mmucosim run` reads too) through the allocator's own code: the free regions are the memory the allocator
  could hand out again (`free_regions()` of the static: bump's `[next, heap_end)`, the chapter's list, the
  fixed-size lists plus the fallback's holes, the crate's holes);
- fragmentation: the free bytes in regions that cannot serve the largest request of the run. The largest
  request is the largest `alloc` layout (by size, then alignment) of any call, a realloc's new layout included.
  A region "can serve" it when the allocator, asked for that layout in its final state, would accept that
  region: for `lla` and the fixed-size fallback the crate's rule (`allocate_first_fit`: after front padding of
  at least 16 bytes when unaligned, the back remainder is 0 or at least 16), with the fixed-size allocator
  asking its fallback for `Layout(block, block)` when the request has a block size; a fixed-size list block
  when it is on the list of the request's block size; for `linked-list` the chapter's `alloc_from_region`
  after `size_align`; for `bump` when `align_up(next, align) + size <= heap_end`. Free bytes that are only in
  regions that cannot serve the largest request are what the design has fragmented for that workload. The
  largest free region is given beside it.

A panic or fault of the kernel in one allocator's run (the bump allocator running out in
`many_boxes_long_lived`) is that row's result, measured up to where the kernel stopped; the others still run.

`.table()` prints the numbers; `.plot(path)` draws the heap maps side by side (heap bytes the allocator cannot
hand out, dark, against its free regions, light, after each allocator call) with the free-region count below,
and bars of the costs and of the free bytes; `.write_json(path)` writes the numbers. `mmucosim
compare-allocators` does all three.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from cosim.analysis.context import ALLOCATOR_KINDS, kind_of
from cosim.analysis.heap import heap_states
from cosim.analysis.plots import HEAP_ROWS, pyplot
from cosim.analysis.summary import format_table
from cosim.program import ProgressCallback, RunResult, resolve_program
from cosim.runner import run_program
from cosim.workloads import WORKLOADS, resolve
from firmware.allocator import ALLOCATORS, HEAP_SIZE, HEAP_START, AllocError, Layout, align_up, allocator_class
from firmware.cpu import Cpu, CpuFault
from firmware.heap_allocation_tests import failed_test
from hdl.protocol import PAGE_SIZE, MmuConfig, Op, TlbPolicy

_LOAD, _STORE = int(Op.LOAD), int(Op.STORE)
_ALLOC_LABEL = re.compile(r"alloc\((\d+), (\d+)\)$")


class ComparisonError(ValueError):
    """A comparison that cannot run: a workload without an allocator (demo-dummy) or an unknown allocator."""


Running = Callable[[str], AbstractContextManager[ProgressCallback | None]]  # see compare_allocators


@dataclass
class AllocatorStats:
    """What one allocator did in one run of the workload (see the module docstring for each definition).

    `error` is set, and every number is 0, when the run could not be measured at all (the backend failed); a
    panic or fault of the kernel is a measured run whose `result` says what stopped it.
    """

    allocator: str
    result: str  # the program's outcome in a few words ("ok", "allocation error at iteration 12799", "3 of 500 null")
    allocs: int
    deallocs: int
    alloc_memory_ops: int
    dealloc_memory_ops: int
    alloc_tlb_hits: int
    alloc_tlb_misses: int
    alloc_walks: int
    alloc_cycles: int
    heap_pages_by_allocator: int
    heap_pages: int
    largest_request: Layout | None
    free_bytes: int
    fragmented_bytes: int  # free bytes in regions that cannot serve largest_request
    free_regions: int
    largest_free_region: int
    operations: int
    heap_map: tuple[list[int], list[list[tuple[int, int]]]] = field(repr=False)  # (seqs, free regions at each)
    error: str | None = None  # why the run could not be measured

    @classmethod
    def not_measured(cls, allocator: str, error: str) -> AllocatorStats:
        """The row of a run that ended without a trace to measure."""
        return cls(allocator, "not measured", *[0] * 10, None, *[0] * 5, ([], []), error)

    def per_alloc(self, value: int) -> float:
        return value / self.allocs if self.allocs else 0.0

    def per_dealloc(self, value: int) -> float:
        return value / self.deallocs if self.deallocs else 0.0

    @property
    def fragmentation(self) -> float:
        """fragmented_bytes / free_bytes (0 when nothing is free)."""
        return self.fragmented_bytes / self.free_bytes if self.free_bytes else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The numbers, raw and per call, JSON-able (without the heap map)."""
        raw = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "heap_map"}
        layout = self.largest_request
        raw["largest_request"] = None if layout is None else {"size": layout.size, "align": layout.align}
        raw["per_alloc"] = {name: self.per_alloc(getattr(self, f"alloc_{name}"))
                            for name in ("memory_ops", "tlb_hits", "tlb_misses", "walks", "cycles")}
        raw["per_dealloc"] = {"memory_ops": self.per_dealloc(self.dealloc_memory_ops)}
        raw["fragmentation"] = self.fragmentation
        return raw


@dataclass
class AllocatorComparison:
    """One workload on several allocators: `stats` by allocator name, in the order they ran."""

    workload: str
    backend: str
    stats: dict[str, AllocatorStats]
    config: MmuConfig = field(default_factory=MmuConfig)

    def table(self) -> str:
        headers = ("allocator", "result", "allocs", "deallocs", "mem ops/alloc", "mem ops/dealloc",
                   "TLB hits/alloc", "misses/alloc", "walks/alloc", "cycles/alloc", "heap pages (alloc/all)",
                   "free bytes", "regions", "largest region", "can't serve largest")
        rows = []
        for s in self.stats.values():
            if s.error is not None:
                rows.append([s.allocator, s.result, *["-"] * (len(headers) - 2)])
                continue
            rows.append([
                s.allocator, s.result, f"{s.allocs:,}", f"{s.deallocs:,}",
                f"{s.per_alloc(s.alloc_memory_ops):.1f}", f"{s.per_dealloc(s.dealloc_memory_ops):.1f}",
                f"{s.per_alloc(s.alloc_tlb_hits):.1f}", f"{s.per_alloc(s.alloc_tlb_misses):.4f}",
                f"{s.per_alloc(s.alloc_walks):.4f}", f"{s.per_alloc(s.alloc_cycles):.1f}",
                f"{s.heap_pages_by_allocator}/{s.heap_pages}", f"{s.free_bytes:,}", f"{s.free_regions:,}",
                f"{s.largest_free_region:,}",
                f"{s.fragmented_bytes:,} ({100 * s.fragmentation:.1f} %)",
            ])
        largest = {repr(s.largest_request) for s in self.stats.values() if s.error is None}
        notes = [f"largest request: {', '.join(sorted(largest))}"]
        notes += [f"{s.allocator}: not measured: {s.error}" for s in self.stats.values() if s.error is not None]
        return f"{self.workload} on {self.backend}\n{format_table(headers, rows)}\n" + "\n".join(notes)

    def as_dict(self) -> dict[str, Any]:
        """The comparison as JSON-able data: workload, backend, MMU configuration and every allocator's numbers."""
        config = {**self.config.fields(), "tlb_policy": TlbPolicy(self.config.tlb_policy).name.lower()}
        return {"workload": self.workload, "backend": self.backend, "config": config,
                "allocators": {name: s.as_dict() for name, s in self.stats.items()}}

    def write_json(self, path: Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        return path

    def plot(self, path: Path) -> Path:
        """Heap maps side by side (one column per allocator, same address range) with the free-region counts
        below them, and bars of the costs per call and of the free bytes at the end."""
        plt = pyplot()
        columns = len(self.stats)
        fig = plt.figure(figsize=(max(3.6 * columns + 1, 14), 11.5), layout="constrained")
        maps_fig, bars_fig = fig.subfigures(2, 1, height_ratios=(7.5, 4))
        self._plot_heap_maps(maps_fig)
        self._plot_bars(bars_fig)
        fig.suptitle(f"{self.workload} on {self.backend}, by allocator")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def _plot_heap_maps(self, fig: Any) -> None:
        from matplotlib.ticker import MaxNLocator

        maps = {name: _binned_use(s.heap_map[1]) for name, s in self.stats.items() if s.heap_map[0]}
        top = max((int(np.flatnonzero(m.any(axis=0))[-1]) for m in maps.values() if m.any()), default=0)
        shown_bins = min(HEAP_SIZE // _BIN, -(-int((top + 1) * 1.15 + 1) // 4) * 4)  # 256-byte steps
        group = -(-shown_bins // HEAP_ROWS)
        shown_bins -= shown_bins % group
        rows, shown = shown_bins // group, shown_bins * _BIN
        axes = fig.subplots(2, len(self.stats), height_ratios=(3, 1), squeeze=False)
        mesh = None
        for column, (name, s) in enumerate(self.stats.items()):
            heap_ax, count_ax = axes[0][column], axes[1][column]
            seqs, snapshots = s.heap_map
            heap_ax.set_title(f"{name}\n{s.result}", fontsize=10)
            if not seqs:
                heap_ax.text(0.5, 0.5, "no allocator calls", transform=heap_ax.transAxes, ha="center")
                continue
            image = maps[name][:, :shown_bins].reshape(len(seqs), rows, group).mean(axis=2).T
            calls = np.arange(len(seqs) + 1)
            mesh = heap_ax.pcolormesh(calls, np.linspace(0, shown, rows + 1), image, cmap="Blues", vmin=0,
                                      vmax=1, shading="flat")
            count_ax.step(calls[:-1], [len(h) for h in snapshots], where="post", color="tab:red", linewidth=0.9)
            count_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            count_ax.set_ylim(bottom=0)
            count_ax.set_xlabel("allocator call (sampled)")
            count_ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(f"offset from the heap start (bytes)\nthe lowest {shown:,} of {HEAP_SIZE:,}")
        axes[1][0].set_ylabel("free regions")
        if mesh is not None:
            fig.colorbar(mesh, ax=axes[0].tolist(), pad=0.01).set_label(
                "share of the bytes the allocator cannot hand out")
        fig.suptitle("Heap maps after each allocator call", fontsize=11)

    def _plot_bars(self, fig: Any) -> None:
        measured = [s for s in self.stats.values() if s.error is None]
        names = [s.allocator for s in measured]
        x = np.arange(len(measured))
        axes = fig.subplots(1, 4)
        panels = [
            ("memory operations per call", [("per alloc", [s.per_alloc(s.alloc_memory_ops) for s in measured]),
                                            ("per dealloc", [s.per_dealloc(s.dealloc_memory_ops) for s in measured])]),
            ("TLB misses per alloc", [("misses", [s.per_alloc(s.alloc_tlb_misses) for s in measured]),
                                      ("walks", [s.per_alloc(s.alloc_walks) for s in measured])]),
            ("cycles per alloc", [("cycles", [s.per_alloc(s.alloc_cycles) for s in measured])]),
        ]
        for ax, (title, series) in zip(axes, panels, strict=False):
            width = 0.8 / len(series)
            for i, (label, values) in enumerate(series):
                ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
            ax.set_title(title, fontsize=10)
            if len(series) > 1:
                ax.legend(fontsize=8)
        free = axes[3]
        serving = [s.free_bytes - s.fragmented_bytes for s in measured]
        free.bar(x, serving, 0.6, color="tab:green", label="can serve the largest request")
        free.bar(x, [s.fragmented_bytes for s in measured], 0.6, bottom=serving, color="tab:orange",
                 label="cannot (fragmented)")
        free.set_title("free bytes at the end", fontsize=10)
        free.legend(fontsize=8)
        for ax in axes:
            ax.set_xticks(x, names, rotation=20, fontsize=8)
            ax.grid(alpha=0.3, axis="y")
        fig.suptitle("Costs of the allocator's calls, and what it leaves free", fontsize=11)


def compare_allocators(
    workload: str,
    allocators: Sequence[str] = tuple(ALLOCATORS),
    *,
    backend: str = "reference",
    config: MmuConfig | None = None,
    n: int | None = None,
    seed: int | None = None,
    ops: int | None = None,
    running: Running | None = None,
    measured: Callable[[AllocatorStats, float], None] | None = None,
) -> AllocatorComparison:
    """Run `workload` (a name of `cosim.workloads`, with its knobs `n`, `seed`, `ops`) traced on `backend` once
    per allocator in `allocators`, and measure each run. Raises ComparisonError (or WorkloadError) before
    anything runs when the workload or an allocator is refused.

    A kernel panic (an allocation error, a failed assertion) or a fault in one allocator's run is that row's
    `result`, measured up to where it stopped; a run that ends without a trace (the backend failed) is a row
    with its `error`. Either way the other allocators still run. `running(name)`, when given, is entered around
    each run (a progress display; it may yield a `ProgressCallback` for the in-process backends), and
    `measured(stats, seconds)` hears of each row as it is done.
    """
    config = config or MmuConfig()
    job = resolve(workload, n=n, seed=seed, ops=ops)
    if job.allocator is None:
        own = WORKLOADS[workload].own_allocator
        raise ComparisonError(f"workload {workload!r} runs its own {own} allocator and takes no other")
    for name in allocators:
        try:
            allocator_class(name)
        except ValueError as err:
            raise ComparisonError(str(err)) from None
    stats = {}
    for name in allocators:
        start = time.perf_counter()
        args = {"program": job.program, "args": {**job.args, "allocator": name}}
        try:
            with running(name) if running else contextlib.nullcontext() as progress:
                run = run_program(GUARDED_PROGRAM, backend, config, args=args, trace=True, progress=progress)
        except Exception as err:  # the backend or the simulator failed: no trace to measure
            stats[name] = AllocatorStats.not_measured(name, f"{type(err).__name__}: {err}")
        else:
            stats[name] = measure(run, name)
        if measured is not None:
            measured(stats[name], time.perf_counter() - start)
    return AllocatorComparison(job.slug, backend, stats, config)


GUARDED_PROGRAM = f"{__name__}:guarded"


def guarded(cpu: Cpu, program: str, args: dict[str, Any]) -> Any:
    """Run `program(cpu, **args)`; a panic or failed assertion of the firmware (an exception type the firmware
    defines) becomes the result `{"result": "panicked", "panic": message}`, so that the trace up to it is kept.
    Importable by name, so that it runs inside the cocotb simulators too."""
    try:
        return resolve_program(program)(cpu, **args)
    except Exception as err:
        if isinstance(err, CpuFault) or type(err).__module__.split(".")[0] != "firmware":
            raise  # a fault is a result already; anything else is not the kernel's
        message = err.seed_panic_message if isinstance(err, AllocError) else f"{type(err).__name__}: {err}"
        return {"result": "panicked", "panic": message}


def measure(run: RunResult, allocator: str) -> AllocatorStats:
    """The statistics of one traced run whose global allocator is `allocator`."""
    events, spans = run.events, run.contexts
    seqs = [e.seq for e in events]
    memory = np.fromiter((e.op in (_LOAD, _STORE) for e in events), dtype=np.int64, count=len(events))
    hits = np.fromiter((bool(e.tlb_hit) for e in events), dtype=np.int64, count=len(events))
    misses = np.fromiter((bool(e.tlb_miss) for e in events), dtype=np.int64, count=len(events))
    walks = np.fromiter((e.walk_levels > 0 for e in events), dtype=np.int64, count=len(events))
    cycles = np.fromiter((e.cycle for e in events), dtype=np.int64, count=len(events))

    def prefix(values: np.ndarray) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(values)))

    mem_sum, hit_sum, miss_sum, walk_sum = (prefix(v) for v in (memory, hits, misses, walks))
    totals = {"alloc": [0, 0, 0, 0, 0, 0], "dealloc": [0, 0, 0, 0, 0, 0]}  # calls, mem, hits, misses, walks, cycles
    largest: Layout | None = None
    in_allocator = np.zeros(len(events) + 1, dtype=np.int64)
    for span in spans:
        kind = kind_of(span.label)
        lo, hi = bisect_left(seqs, span.start_seq), bisect_left(seqs, span.end_seq)
        if kind in ALLOCATOR_KINDS:
            in_allocator[lo] += 1
            in_allocator[hi] -= 1
        if kind not in totals:
            continue
        row = totals[kind]
        row[0] += 1
        row[1] += int(mem_sum[hi] - mem_sum[lo])
        row[2] += int(hit_sum[hi] - hit_sum[lo])
        row[3] += int(miss_sum[hi] - miss_sum[lo])
        row[4] += int(walk_sum[hi] - walk_sum[lo])
        if hi > lo:
            row[5] += int(cycles[hi - 1]) - (int(cycles[lo - 1]) if lo else 0)
        match = _ALLOC_LABEL.fullmatch(span.label) if kind == "alloc" else None
        if match:
            layout = Layout(int(match[1]), int(match[2]))
            largest = layout if largest is None or layout > largest else largest
    allocator_events = np.cumsum(in_allocator[:-1]) > 0
    heap_pages, by_allocator = set(), set()
    for event, inside in zip(events, allocator_events, strict=True):
        if event.op in (_LOAD, _STORE) and HEAP_START <= event.vaddr < HEAP_START + HEAP_SIZE:
            page = event.vaddr // PAGE_SIZE
            heap_pages.add(page)
            if inside:
                by_allocator.add(page)
    states = heap_states(events, spans, allocator)
    final = states.final
    regions = final.free_regions()
    fragmented = sum(size for addr, size, serves in _classify(final, allocator, largest) if not serves)
    alloc, dealloc = totals["alloc"], totals["dealloc"]
    return AllocatorStats(
        allocator, _outcome(run.value), alloc[0], dealloc[0], alloc[1], dealloc[1], alloc[2], alloc[3], alloc[4],
        alloc[5], len(by_allocator), len(heap_pages), largest, sum(size for _, size in regions), fragmented,
        len(regions), max((size for _, size in regions), default=0), run.ops, (states.seqs, states.snapshots),
    )


def _outcome(value: Any) -> str:
    """The run's result in a few words: "ok", "allocation error at iteration 12799", "9 of 649 null", "PageFault
    at 0x…", or a panic message."""
    if isinstance(value, dict):
        panic = failed_test(value) or (str(value.get("panic")) if value.get("result") == "panicked" else None)
        if panic is not None:
            return re.sub(r"^allocation error: Layout \{[^}]*\}", "allocation error", panic)
        return str(value.get("result", "ok"))
    if isinstance(value, list) and value and isinstance(value[0], dict):  # replay records
        nulls = sum(record["addr"] is None for record in value)
        return f"{nulls} of {len(value)} null"
    if isinstance(value, Exception):
        return str(value) or type(value).__name__
    return "ok"


_BIN = 64  # bytes per cell of a binned heap map


def _binned_use(snapshots: list[list[tuple[int, int]]]) -> np.ndarray:
    """Per snapshot, per 64-byte bin of the heap: the share of its bytes the allocator cannot hand out (outside
    every free region)."""
    out = np.empty((len(snapshots), HEAP_SIZE // _BIN))
    for column, regions in enumerate(snapshots):
        used = np.ones(HEAP_SIZE, dtype=bool)
        for addr, length in regions:
            used[max(addr - HEAP_START, 0):max(addr - HEAP_START + length, 0)] = False
        out[column] = used.reshape(-1, _BIN).mean(axis=1)
    return out


def _crate_fits(hole: int, hole_size: int, layout: Layout) -> bool:
    """linked_list_allocator 0.9.1's test of one hole (`HoleList::allocate_first_fit`)."""
    from firmware.linked_list_allocator.hole import MIN_SIZE, align_layout

    size, align = align_layout(layout)
    addr = hole if hole % align == 0 else align_up(hole + MIN_SIZE, align)
    back = hole + hole_size - addr - size
    return back == 0 or back >= MIN_SIZE


def _classify(static: Any, allocator: str, layout: Layout | None) -> list[tuple[int, int, bool]]:
    """(address, size, can serve `layout`) of every free region of the allocator static (see the module
    docstring for the rule of each design); with no request at all, every region counts as serving."""
    if layout is None:
        return [(addr, size, True) for addr, size in static.free_regions()]
    if allocator == "lla":
        return [(a, s, _crate_fits(a, s, layout)) for a, s in static.free_regions()]
    if allocator == "bump":
        return [(a, s, align_up(a, layout.align) + layout.size <= a + s) for a, s in static.free_regions()]
    if allocator == "linked-list":
        from firmware.allocator.linked_list import LIST_NODE_SIZE, LinkedListAllocator

        size, align = LinkedListAllocator.size_align(layout)

        def fits(addr: int, region: int) -> bool:
            excess = addr + region - (align_up(addr, align) + size)
            return excess == 0 or excess >= LIST_NODE_SIZE

        return [(a, s, fits(a, s)) for a, s in static.free_regions()]
    from firmware.allocator.fixed_size_block import BLOCK_SIZES, list_index

    index = list_index(layout)
    inner = static.inner
    out = [(block, size, i == index) for i, size in enumerate(BLOCK_SIZES) for block in inner.blocks(i)]
    asked = layout if index is None else Layout(BLOCK_SIZES[index], BLOCK_SIZES[index])
    out += [(a, s, _crate_fits(a, s, asked)) for a, s in inner.fallback_allocator.holes.holes()]
    return out
