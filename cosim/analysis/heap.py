"""The kernel heap as a trace left it: free regions after each allocator call, for any global allocator.

A traced run records every STORE with its data, so the RAM it leaves can be rebuilt (`ShadowMemory`). The
firmware's own allocator code then reads its state out of that RAM, as a debugger would: `free_regions()` of the
`#[global_allocator]` static (`firmware.allocator.KernelAllocator`) — the crate's holes for `lla`, `[next,
heap_end)` for `bump`, the chapter's list for `linked-list`, the block lists and the fallback's holes for
`fixed-size-block`. `heap_states` does so after each allocator call (sampled), which is what the heap map of
`mmucosim run` (`cosim.analysis.plots`) and the comparison of allocators (`cosim.compare`) both draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cosim.analysis.trace import SpanLike, kind_of
from firmware.allocator import DEFAULT_ALLOCATOR, HEAP_SIZE, HEAP_START, KernelAllocator, global_allocator
from firmware.cpu import Cpu
from hdl.protocol import AccessEvent, Fault, Op

_LOAD, _STORE = int(Op.LOAD), int(Op.STORE)
ALLOCATOR_KINDS = frozenset(("alloc", "dealloc", "realloc", "alloc_zeroed"))  # kinds of the allocator's calls
MAX_HEAP_SAMPLES = 400  # snapshots of a run at most (columns of a heap map)
INIT_HEAP = "init_heap"  # the context after which the heap exists


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


def heap_states(
    events: Sequence[AccessEvent],
    spans: Sequence[SpanLike],
    allocator: str = DEFAULT_ALLOCATOR,
    *,
    max_samples: int = MAX_HEAP_SAMPLES,
) -> HeapStates:
    """The free regions of the global allocator `allocator` (a name of `firmware.allocator.ALLOCATORS`) after
    the allocator calls of a traced run (at most `max_samples`, evenly sampled), once the heap exists."""
    initialised = min((s.end_seq for s in spans if s.label == INIT_HEAP), default=None)
    ends = sorted({s.end_seq for s in spans if kind_of(s.label) in ALLOCATOR_KINDS})
    ends = [] if initialised is None else [end for end in ends if end >= initialised]
    if len(ends) > max_samples:
        ends = [ends[round(i * (len(ends) - 1) / (max_samples - 1))] for i in range(max_samples)]
    memory = ShadowMemory()
    static = global_allocator(Cpu(memory), allocator)
    seqs: list[int] = []
    snapshots: list[Regions] = []
    pending = iter(ends)
    next_end = next(pending, None)
    for event in events:
        while next_end is not None and event.seq >= next_end:
            seqs.append(next_end)
            snapshots.append(static.free_regions())
            next_end = next(pending, None)
        memory.observe(event)
    for end in [] if next_end is None else [next_end, *pending]:  # allocator calls that ended the run
        seqs.append(end)
        snapshots.append(static.free_regions())
    return HeapStates(allocator, seqs, snapshots, static)
