"""linked_list_allocator 0.9.1 `src/lib.rs`: `Heap` and `LockedHeap`, laid out in simulated memory.

`Heap { bottom, size, used, holes: HoleList { first: Hole { size, next } } }` is five usizes (40 bytes, in
declaration order); `LockedHeap(Spinlock<Heap>)` puts the spinlock's `AtomicBool` first, padded to 8, then the
`Heap` (48 bytes in all). Everything, the lock included, is read and written in memory.

Misuse that Rust leaves undefined is caught before any memory is touched, so the heap stays intact: a block
freed twice (`DoubleFree`), a pointer the heap never handed out (`ForeignFree`), a `dealloc` whose layout is
not the allocation's (`LayoutMismatch`). That bookkeeping lives in Python and changes neither placement nor
traffic.
"""

from __future__ import annotations

from firmware.allocator import GlobalAlloc, Layout, SpinlockDeadlock
from firmware.cpu import Cpu
from firmware.linked_list_allocator.hole import USIZE, HoleList

HEAP_BOTTOM = 0
HEAP_SIZE_FIELD = USIZE
HEAP_USED = 2 * USIZE
HEAP_HOLES = 3 * USIZE
HEAP_LAYOUT = Layout(5 * USIZE, USIZE)
LOCK = 0
LOCKED_HEAP_DATA = USIZE


class InvalidFree(Exception):
    """A `dealloc` the heap refused because it would corrupt the hole list; the heap is unchanged."""


class DoubleFree(InvalidFree):
    """The block was already freed (and not handed out again since)."""


class ForeignFree(InvalidFree):
    """The pointer was never returned by this heap's `allocate_first_fit`."""


class LayoutMismatch(InvalidFree):
    """`dealloc` got a layout other than the one the block was allocated with."""


class Heap:
    """A fixed-size heap backed by the linked list of its free blocks, at `addr` in memory."""

    __slots__ = ("_freed", "_live", "addr", "cpu", "holes")

    def __init__(self, cpu: Cpu, addr: int) -> None:
        self.cpu = cpu
        self.addr = addr
        self.holes = HoleList(cpu, addr + HEAP_HOLES)
        self._live: dict[int, Layout] = {}  # sanitizer: address -> layout of every block handed out
        self._freed: set[int] = set()  # sanitizer: addresses freed and not handed out again

    def write_empty(self) -> None:
        """`Heap::empty()`: no memory; every allocation fails."""
        self.cpu.store_u64(self.addr + HEAP_BOTTOM, 0)
        self.cpu.store_u64(self.addr + HEAP_SIZE_FIELD, 0)
        self.cpu.store_u64(self.addr + HEAP_USED, 0)
        self.holes.write_empty()

    def init(self, heap_bottom: int, heap_size: int) -> None:
        """`Heap::init`: all of `[heap_bottom, heap_bottom + heap_size)` becomes one hole. The range must be
        mapped and writable: the hole's node is written at its start."""
        self.cpu.store_u64(self.addr + HEAP_BOTTOM, heap_bottom)
        self.cpu.store_u64(self.addr + HEAP_SIZE_FIELD, heap_size)
        self.cpu.store_u64(self.addr + HEAP_USED, 0)
        self.holes.write_new(heap_bottom, heap_size)
        self._live.clear()
        self._freed.clear()

    def allocate_first_fit(self, layout: Layout) -> int | None:
        """The address of a block for `layout` from the first hole that fits, or None (Rust's `Err(())`)."""
        found = self.holes.allocate_first_fit(layout)
        if found is None:
            return None
        ptr, aligned_layout = found
        used = self.addr + HEAP_USED
        self.cpu.store_u64(used, self.cpu.load_u64(used) + aligned_layout.size)
        self._live[ptr] = layout
        self._freed.discard(ptr)
        return ptr

    def deallocate(self, ptr: int, layout: Layout) -> None:
        """Give back the block at `ptr`, allocated with `layout`; it merges with the holes around it. A
        refused free raises before the hole list is touched."""
        self._check_free(ptr, layout)
        aligned_layout = self.holes.deallocate(ptr, layout)
        used = self.addr + HEAP_USED
        self.cpu.store_u64(used, self.cpu.load_u64(used) - aligned_layout.size)

    def _check_free(self, ptr: int, layout: Layout) -> None:
        allocated = self._live.get(ptr)
        if allocated is None:
            if ptr in self._freed:
                raise DoubleFree(f"double free of {ptr:#x} ({layout!r})")
            raise ForeignFree(f"free of {ptr:#x}, which this heap never allocated")
        if allocated != layout:
            raise LayoutMismatch(f"free of {ptr:#x} with {layout!r}, but it was allocated with {allocated!r}")
        del self._live[ptr]
        self._freed.add(ptr)

    def bottom(self) -> int:
        return self.cpu.load_u64(self.addr + HEAP_BOTTOM)

    def size(self) -> int:
        return self.cpu.load_u64(self.addr + HEAP_SIZE_FIELD)

    def top(self) -> int:
        return self.bottom() + self.size()

    def used(self) -> int:
        return self.cpu.load_u64(self.addr + HEAP_USED)

    def free(self) -> int:
        return self.size() - self.used()

    def extend(self, by: int) -> None:
        """`Heap::extend`: the `by` bytes after the top (they must be mapped) join the heap as a hole."""
        top = self.top()
        self.holes.deallocate(top, Layout.from_size_align(by, 1))
        size = self.addr + HEAP_SIZE_FIELD
        self.cpu.store_u64(size, self.cpu.load_u64(size) + by)

    def live_blocks(self) -> dict[int, Layout]:
        """The blocks handed out and not yet freed (the sanitizer's view), address -> layout."""
        return dict(self._live)


class LockedHeap(GlobalAlloc):
    """`LockedHeap(Spinlock<Heap>)` at `addr`: the global allocator of the kernel.

    A handle touches no memory; `write_empty` writes the `LockedHeap::empty()` initialiser.
    """

    __slots__ = ("addr", "cpu", "heap")

    def __init__(self, cpu: Cpu, addr: int) -> None:
        self.cpu = cpu
        self.addr = addr
        self.heap = Heap(cpu, addr + LOCKED_HEAP_DATA)

    def write_empty(self) -> None:
        """`LockedHeap::empty()`: unlocked, with an empty heap."""
        self.cpu.store_u8(self.addr + LOCK, 0)
        self.heap.write_empty()

    def _acquire(self) -> None:
        # RawSpinlock::try_lock: compare_exchange(false, true), one load and one store of the lock byte
        cpu = self.cpu
        if cpu.load_u8(self.addr + LOCK):
            raise SpinlockDeadlock(f"the LockedHeap spinlock at {self.addr:#x} is already held")
        cpu.store_u8(self.addr + LOCK, 1)

    def _release(self) -> None:
        self.cpu.store_u8(self.addr + LOCK, 0)

    def live_blocks(self) -> dict[int, Layout]:
        """The heap's `live_blocks()` (its sanitizer's record), as every global allocator static offers it."""
        return self.heap.live_blocks()

    def free_regions(self) -> list[tuple[int, int]]:
        """The holes, (address, size) in list order, read from memory: `HoleList::holes`."""
        return self.heap.holes.holes()

    def lock(self) -> _HeapGuard:
        """`self.0.lock()`: `with heap.lock() as heap: ...` holds the spinlock for the block."""
        return _HeapGuard(self)

    def _alloc(self, layout: Layout) -> int:
        self._acquire()
        try:
            return self.heap.allocate_first_fit(layout) or 0
        finally:
            self._release()

    def _dealloc(self, ptr: int, layout: Layout) -> None:
        self._acquire()
        try:
            self.heap.deallocate(ptr, layout)
        finally:
            self._release()


class _HeapGuard:
    """The `SpinlockGuard` of a `LockedHeap`: the `Heap` while the lock is held."""

    __slots__ = ("_locked",)

    def __init__(self, locked: LockedHeap) -> None:
        self._locked = locked

    def __enter__(self) -> Heap:
        self._locked._acquire()
        return self._locked.heap

    def __exit__(self, *exc: object) -> None:
        self._locked._release()
