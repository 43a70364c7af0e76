"""The kernel heap as a trace left it: free regions after each allocator call, for any global allocator.

A traced run records every STORE with its data, so the RAM it leaves can be rebuilt (`ShadowMemory`). The
firmware's own allocator code then reads its state out of that RAM, as a debugger would: `free_regions()` of the
`#[global_allocator]` static (`firmware.allocator.KernelAllocator`) — the crate's holes for `lla`, `[next,
heap_end)` for `bump`, the chapter's list for `linked-list`, the block lists and the fallback's holes for
`fixed-size-block`. `heap_states_of_batches` does so after each allocator call (sampled), reading the events
batch by batch as a streamed run leaves them; `heap_states` does the same for a run kept whole. They are what the
heap map of `mmucosim run` (`cosim.analysis.plots`) and the comparison of allocators (`cosim.compare`) draw.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

from cosim.analysis.context import ALLOCATOR_KINDS, INIT_HEAP, SpanLike, kind_of
from firmware.allocator import DEFAULT_ALLOCATOR, HEAP_SIZE, HEAP_START, KernelAllocator, global_allocator
from firmware.cpu import Cpu
from hdl.protocol import AccessEvent, Fault, Op

_LOAD, _STORE = int(Op.LOAD), int(Op.STORE)
MAX_HEAP_SAMPLES = 400  # snapshots of a run at most (columns of a heap map)


class ShadowMemory:
    """Enough of a backend for the firmware's own allocator code to read its heap as a trace left it.

    Physical RAM is rebuilt from STORE events; a virtual address is translated with the page mapping the
    trace last showed for it, so the firmware's data structures read back at the addresses it used. Read-only:
    a store is refused.
    """

    def __init__(self) -> None:
        self.ram: dict[int, int] = {}  # 8-byte words
        self.pages: dict[int, int] = {}  # virtual page -> physical page, as last observed

    def observe(self, event: AccessEvent) -> None:
        """Take in one event of the trace (in order)."""
        if event.op not in (_LOAD, _STORE) or event.fault != Fault.NONE:
            return
        paddr = event.paddr if event.tlb_hit or event.tlb_miss else event.vaddr
        self.pages[event.vaddr >> 12] = paddr >> 12
        if event.op == _STORE:
            word, shift = paddr & ~7, (paddr & 7) * 8
            mask = ((1 << (8 * event.size)) - 1) << shift
            self.ram[word] = (self.ram.get(word, 0) & ~mask) | ((event.data << shift) & mask)

    def observe_columns(self, columns: Mapping[str, np.ndarray], start: int, stop: int) -> None:
        """`observe` the events start..stop-1 of a batch's columns, in order: each word ends up with, lane by lane
        (byte by byte), what the last store to that lane wrote."""
        part = slice(start, stop)
        op = columns["op"][part]
        used = ((op == _LOAD) | (op == _STORE)) & (columns["fault"][part] == Fault.NONE)
        if not used.any():
            return
        vaddr, paddr = columns["vaddr"][part][used], columns["paddr"][part][used]
        translated = (columns["tlb_hit"][part] | columns["tlb_miss"][part])[used]
        paddr = np.where(translated, paddr, vaddr).astype(np.uint64)
        vpages, ppages = vaddr >> 12, paddr >> 12
        changed = np.ones(len(vpages), dtype=bool)  # runs of one mapping: only their first entry matters
        changed[1:] = (vpages[1:] != vpages[:-1]) | (ppages[1:] != ppages[:-1])
        self.pages.update(zip(vpages[changed].tolist(), ppages[changed].tolist(), strict=True))  # the last wins
        stores = op[used] == _STORE
        if not stores.any():
            return
        paddr = paddr[stores]
        size = columns["size"][part][used][stores].astype(np.int64)
        data = columns["data"][part][used][stores].astype(np.uint64)
        words, which = np.unique(paddr & ~np.uint64(7), return_inverse=True)
        which = which.ravel()
        first = (paddr & np.uint64(7)).astype(np.int64)  # the first byte lane each store writes
        lanes = np.zeros((len(words), 8), dtype=np.uint8)  # per word and lane: the last byte stored there
        written = np.zeros((len(words), 8), dtype=bool)
        order = np.arange(len(which))
        for lane in range(8):
            covering = (first <= lane) & (lane < first + size)
            if not covering.any():
                continue
            latest = np.full(len(words), -1)  # per word: the last store that wrote this lane
            np.maximum.at(latest, which[covering], order[covering])
            found = np.flatnonzero(latest >= 0)
            store = latest[found]
            shift = (8 * (lane - first[store])).astype(np.uint64)
            lanes[found, lane] = (data[store] >> shift) & np.uint64(0xFF)
            written[found, lane] = True
        values = lanes.view("<u8").ravel()
        kept = (~written).view(np.uint8) * np.uint8(0xFF)  # the lanes no store wrote keep their old bytes
        kept_mask = kept.view("<u8").ravel()
        ram = self.ram
        partly = np.flatnonzero(kept_mask)
        old = np.fromiter(map(ram.get, words[partly].tolist(), repeat(0)), dtype=np.uint64, count=len(partly))
        values[partly] |= old & kept_mask[partly]
        ram.update(zip(words.tolist(), values.tolist(), strict=True))

    def transact(
        self, op: int, addr: int, size: int = 3, wdata: int = 0, user: bool = False, fetch: bool = False
    ) -> tuple[int, int, int]:
        if op != _LOAD:
            raise RuntimeError("a shadow of the trace's RAM is only read")
        page = self.pages.get(addr >> 12)
        if page is None:
            return 0, 0, 0  # never touched: still zero
        paddr = (page << 12) | (addr & 0xFFF)
        word = self.ram.get(paddr & ~7, 0) >> ((paddr & 7) * 8)
        return word & ((1 << (8 << size)) - 1), 0, 0


Regions = list[tuple[int, int]]  # (address, size) of free regions


@dataclass
class HeapStates:
    """The heap of one run: the free regions after each sampled allocator call, and the allocator static
    reading the RAM the whole trace left (its final state). `seqs` is empty when the run never initialised
    the heap (no `init_heap`, e.g. the Dummy allocator's kernel)."""

    allocator: str
    seqs: list[int]  # the seq at which each snapshot was taken (the end of an allocator call)
    snapshots: list[Regions]  # free regions at each seq
    final: KernelAllocator = field(repr=False)  # the static over the final RAM
    bottom: int = HEAP_START
    size: int = HEAP_SIZE


HEAP_COLUMNS = ("seq", "op", "vaddr", "paddr", "size", "data", "tlb_hit", "tlb_miss", "fault")  # what it reads


def heap_states_of_batches(
    batches: Iterable[Mapping[str, np.ndarray]], allocator_ends: Sequence[int], heap_ready: int | None,
    allocator: str = DEFAULT_ALLOCATOR, *, max_samples: int = MAX_HEAP_SAMPLES,
) -> HeapStates:  # fmt: skip
    """The free regions of the global allocator `allocator` (a name of `firmware.allocator.ALLOCATORS`) after its
    calls, from a run's events (HEAP_COLUMNS of each batch, in seq order), the distinct seqs where allocator calls
    ended (ascending) and the seq where `init_heap` ended (`heap_ready`; None: the heap never existed). At most
    `max_samples` snapshots, evenly sampled among the calls that ended once the heap existed."""
    ends = np.asarray(allocator_ends, dtype=np.int64)  # millions, in a long run: filtered and sampled in numpy
    ends = ends[ends >= heap_ready] if heap_ready is not None else ends[:0]
    if len(ends) > max_samples:
        ends = ends[np.round(np.arange(max_samples) * (len(ends) - 1) / (max_samples - 1)).astype(np.int64)]
    memory = ShadowMemory()
    static = global_allocator(Cpu(memory), allocator)
    seqs: list[int] = []
    snapshots: list[Regions] = []
    pending = 0  # index in ends of the next snapshot
    for batch in batches:
        columns = {name: np.asarray(batch[name]) for name in HEAP_COLUMNS}
        seq = columns["seq"].astype(np.int64, copy=False)
        done = 0
        while pending < len(ends) and len(seq) and ends[pending] <= seq[-1]:
            stop = int(np.searchsorted(seq, ends[pending], side="left"))  # the events before the call ended
            memory.observe_columns(columns, done, stop)
            done = stop
            seqs.append(int(ends[pending]))
            snapshots.append(static.free_regions())
            pending += 1
        memory.observe_columns(columns, done, len(seq))
    for end in ends[pending:]:  # allocator calls that ended the run
        seqs.append(int(end))
        snapshots.append(static.free_regions())
    return HeapStates(allocator, seqs, snapshots, static)


def heap_states(
    events: Sequence[AccessEvent],
    spans: Sequence[SpanLike],
    allocator: str = DEFAULT_ALLOCATOR,
    *,
    max_samples: int = MAX_HEAP_SAMPLES,
) -> HeapStates:
    """heap_states_of_batches for a run kept whole: its events as one list, its context spans."""
    from cosim.stream import event_columns

    heap_ready = min((s.end_seq for s in spans if s.label == INIT_HEAP), default=None)
    ends = sorted({s.end_seq for s in spans if kind_of(s.label) in ALLOCATOR_KINDS})
    return heap_states_of_batches([event_columns(events)], ends, heap_ready, allocator, max_samples=max_samples)
