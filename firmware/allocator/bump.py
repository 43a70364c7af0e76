"""blog_os `src/allocator/bump.rs`: the bump allocator of the "Allocator Designs" chapter, in simulated memory.

`BumpAllocator { heap_start, heap_end, next, allocations }` is four usizes; all have the same size and
alignment, so rustc's field reordering (which sorts by alignment) leaves them in declaration order: +0, +8, +16,
+24 (32 bytes). `Locked<BumpAllocator>` puts it after the spinlock byte, at +8 (`firmware.allocator.Locked`).
Every field is read and written in memory, through `cpu`.

Placement is the chapter's: `alloc` rounds `next` up to the layout's alignment and bumps it by the size (no
rounding of the size); `null` when `alloc_start + size` overflows or passes `heap_end`; `dealloc` only counts
down, and when the count reaches 0 `next` goes back to `heap_start`. Freed memory is reused only then.

Memory traffic follows the Rust code as `rustc -O` emits it: each field the code reads is loaded once per call.
"""

from __future__ import annotations

from firmware.allocator import (
    LOCKED_DATA,
    USIZE_MAX,
    KernelPanic,
    Layout,
    Locked,
    UsizeField,
    align_up,
)
from firmware.cpu import Cpu

BUMP_HEAP_START = 0
BUMP_HEAP_END = 8
BUMP_NEXT = 16
BUMP_ALLOCATIONS = 24
BUMP_LAYOUT = Layout(32, 8)


class BumpAllocator:
    """The `BumpAllocator` struct at `addr`. The loader's zeroed statics are `BumpAllocator::new()`."""

    __slots__ = ("addr", "cpu")

    heap_start = UsizeField(BUMP_HEAP_START)
    heap_end = UsizeField(BUMP_HEAP_END)
    next = UsizeField(BUMP_NEXT)
    allocations = UsizeField(BUMP_ALLOCATIONS)

    def __init__(self, cpu: Cpu, addr: int) -> None:
        self.cpu = cpu
        self.addr = addr

    def write_new(self) -> None:
        """`BumpAllocator::new()`: every field 0."""
        self.heap_start = 0
        self.heap_end = 0
        self.next = 0
        self.allocations = 0

    def init(self, heap_start: int, heap_size: int) -> None:
        """`BumpAllocator::init`: the heap bounds, and `next` at the start. The chapter leaves `allocations`
        alone (0 from `new`)."""
        self.heap_start = heap_start
        self.heap_end = heap_start + heap_size
        self.next = heap_start


class LockedBumpAllocator(Locked[BumpAllocator]):
    """`unsafe impl GlobalAlloc for Locked<BumpAllocator>`, the static at `addr`.

    Misuse: `dealloc` ignores its pointer and layout, as the chapter's does, so a foreign or double free is not
    detected; it only lowers the count, and may thereby reset `next` under live blocks (they are then handed
    out again). A `dealloc` with no allocation outstanding panics with "attempt to subtract with overflow", as
    the chapter's `allocations -= 1` does in blog_os's (debug) builds; nothing is written.
    """

    __slots__ = ()

    def __init__(self, cpu: Cpu, addr: int) -> None:
        super().__init__(cpu, addr, BumpAllocator(cpu, addr + LOCKED_DATA))

    def write_new(self) -> None:
        """`Locked::new(BumpAllocator::new())`: unlocked, every field 0."""
        self._release()
        self.inner.write_new()

    def _alloc(self, layout: Layout) -> int:
        with self.lock() as bump:  # get a mutable reference
            alloc_start = align_up(bump.next, layout.align)
            alloc_end = alloc_start + layout.size
            if alloc_end > USIZE_MAX:  # alloc_start.checked_add(layout.size()) is None
                return 0
            if alloc_end > bump.heap_end:
                return 0  # out of memory
            bump.next = alloc_end
            bump.allocations += 1
            return alloc_start

    def _dealloc(self, ptr: int, layout: Layout) -> None:
        with self.lock() as bump:  # get a mutable reference
            allocations = bump.allocations
            if allocations == 0:
                raise KernelPanic("attempt to subtract with overflow")
            bump.allocations = allocations - 1
            if allocations == 1:  # bump.allocations == 0
                bump.next = bump.heap_start

    def free_regions(self) -> list[tuple[int, int]]:
        """`[next, heap_end)`, the only memory the allocator can hand out (freed blocks below `next` come back
        only when every allocation is freed)."""
        bump = self.inner
        next_, heap_end = bump.next, bump.heap_end
        return [(next_, heap_end - next_)] if heap_end > next_ else []
