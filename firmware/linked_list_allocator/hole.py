"""The free list of linked_list_allocator 0.9.1 (`src/hole.rs`), with every node in simulated memory.

A hole is a free block that stores its own list node in its first 16 bytes: `Hole { size: usize, next:
Option<&mut Hole> }`, `size` at +0 and `next` at +8 (0 is `None`). The list is sorted by address and starts at
a dummy hole of size 0, `HoleList.first`, which lives wherever the `HoleList` value lives (in the kernel,
inside the `LockedHeap` static). Every node is read and written with `cpu.load_u64`/`cpu.store_u64`, so the
MMU sees the allocator's real traffic; nothing about the list is kept in Python.

Placement is the crate's, decision for decision: first fit; an allocation is at least 16 bytes and a multiple
of 8; front padding (when the hole is not aligned) starts the allocation at `align_up(hole + 16, align)`; a
hole whose back remainder would be 1..15 bytes is unsuitable; the padding holes are linked where the used hole
was (0.9.1, PR #54); a freed block is inserted in address order and merged with the holes right before and
behind it.

Memory traffic follows the Rust source the way `rustc -O` emits it: each node field is loaded the first time
the code reads it (a value the code just wrote or read is reused), and within one step of a loop only the last
store to a field is kept. `Option::take` leaves a 0 in the old node when nothing overwrites it.
"""

from __future__ import annotations

from functools import lru_cache

from firmware.allocator import Layout
from firmware.cpu import Cpu

USIZE = 8
HOLE_SIZE = 0  # offset of `Hole.size`
HOLE_NEXT = USIZE  # offset of `Hole.next`
HOLE_ALIGN = USIZE  # align_of::<Hole>()
MIN_SIZE = 2 * USIZE  # size_of::<Hole>(): HoleList::min_size()


class InvalidDeallocation(Exception):
    """The crate's own assertion in `deallocate`: the freed block overlaps a hole (the list is corrupt or the
    block was already free)."""


def align_up(addr: int, align: int) -> int:
    """The smallest multiple of `align` (a power of two) that is >= `addr`."""
    return (addr + align - 1) & -align


@lru_cache(maxsize=4096)  # a program uses few distinct layouts, and this runs on every alloc and dealloc
def align_layout(layout: Layout) -> Layout:
    """`HoleList::align_layout`: the size grows to at least `min_size`, then to a multiple of 8."""
    return Layout.from_size_align(align_up(max(layout.size, MIN_SIZE), HOLE_ALIGN), layout.align)


class HoleList:
    """`HoleList { first: Hole }` whose dummy `first` hole is the 16 bytes at `first`."""

    __slots__ = ("cpu", "first")

    def __init__(self, cpu: Cpu, first: int) -> None:
        self.cpu = cpu
        self.first = first

    @staticmethod
    def min_size() -> int:
        return MIN_SIZE

    def write_empty(self) -> None:
        """`HoleList::empty()`: the dummy hole with no successor."""
        self.cpu.store_u64(self.first + HOLE_SIZE, 0)
        self.cpu.store_u64(self.first + HOLE_NEXT, 0)

    def write_new(self, hole_addr: int, hole_size: int) -> None:
        """`self = HoleList::new(hole_addr, hole_size)`: one hole at `hole_addr` aligned up to 8, whose size
        is `hole_size` minus that alignment (saturating; 0.9.1 does not round the size down)."""
        aligned = align_up(hole_addr, HOLE_ALIGN)
        store = self.cpu.store_u64
        store(aligned + HOLE_SIZE, max(hole_size - (aligned - hole_addr), 0))
        store(aligned + HOLE_NEXT, 0)
        store(self.first + HOLE_SIZE, 0)
        store(self.first + HOLE_NEXT, aligned)

    def allocate_first_fit(self, layout: Layout) -> tuple[int, Layout] | None:
        """The first hole that fits `layout` once aligned: (address, aligned layout), or None when none fits.

        The hole leaves the list; its front and back padding, if any, take its place.
        """
        aligned_layout = align_layout(layout)
        size, align = aligned_layout
        load, store = self.cpu.load_u64, self.cpu.store_u64
        previous = self.first
        current = load(previous + HOLE_NEXT)
        while current:
            hole_size = load(current + HOLE_SIZE)
            # split_hole: an unaligned hole keeps a front padding hole of at least MIN_SIZE
            addr = current if current & (align - 1) == 0 else align_up(current + MIN_SIZE, align)
            hole_end = current + hole_size
            back = hole_end - addr - size
            if back >= 0 and (back == 0 or back >= MIN_SIZE):
                successor = load(current + HOLE_NEXT)
                if addr == current:
                    link = current + size if back else successor
                    store(current + HOLE_NEXT, 0)  # current.next.take(), inside the allocation
                else:  # the front padding is a hole where `current` was
                    link = current
                    store(current + HOLE_SIZE, addr - current)
                    store(current + HOLE_NEXT, addr + size if back else successor)
                if back:
                    store(addr + size + HOLE_SIZE, back)
                    store(addr + size + HOLE_NEXT, successor)
                store(previous + HOLE_NEXT, link)
                return addr, aligned_layout
            previous = current
            current = load(current + HOLE_NEXT)
        return None

    def deallocate(self, ptr: int, layout: Layout) -> Layout:
        """Give the block at `ptr` back, merged with its neighbours; returns the aligned layout it used."""
        aligned_layout = align_layout(layout)
        self._deallocate(ptr, aligned_layout.size)
        return aligned_layout

    def _deallocate(self, addr: int, size: int) -> None:
        """`hole::deallocate`: walk from the dummy hole to the hole before `addr`; insert or merge there."""
        load, store = self.cpu.load_u64, self.cpu.store_u64
        hole = self.first
        hole_size = load(hole + HOLE_SIZE)
        hole_next = load(hole + HOLE_NEXT)
        next_size = load(hole_next + HOLE_SIZE) if hole_next else 0
        while True:
            hole_end = (hole if hole_size else 0) + hole_size  # the dummy hole counts as address 0
            if hole_end > addr:
                raise InvalidDeallocation("invalid deallocation (probably a double free)")
            if hole_end == addr:
                if hole_next and addr + size == hole_next:
                    # ___XXXFFFFYYYYY___: the freed block fills the gap between this hole and the next
                    store(hole + HOLE_SIZE, hole_size + size + next_size)
                    successor = load(hole_next + HOLE_NEXT)
                    store(hole_next + HOLE_NEXT, 0)  # the next hole's `next.take()`
                    store(hole + HOLE_NEXT, successor)
                else:
                    # ___XXXFFFF__YYYYY___: right behind this hole, used memory after it
                    store(hole + HOLE_SIZE, hole_size + size)
                return
            if hole_next and addr + size == hole_next:
                # ___XXX__FFFFYYYYY___: right before the next hole: absorb it and insert the merged block
                successor = load(hole_next + HOLE_NEXT)
                store(hole_next + HOLE_NEXT, 0)
                store(hole + HOLE_NEXT, successor)
                size += next_size
                hole_next = successor
                next_size = load(hole_next + HOLE_SIZE) if hole_next else 0
                continue
            if hole_next and hole_next <= addr:
                # ___XXX__YYYYY__FFFF___: behind the next hole, which handles it
                hole, hole_size = hole_next, next_size
                hole_next = load(hole + HOLE_NEXT)
                next_size = load(hole_next + HOLE_SIZE) if hole_next else 0
                continue
            # ___XXX__FFFF__YYYYY___: a new hole between this one and the next (or after the last)
            store(addr + HOLE_SIZE, size)
            store(addr + HOLE_NEXT, hole_next)
            store(hole + HOLE_NEXT, addr)
            return

    def holes(self) -> list[tuple[int, int]]:
        """The (address, size) of every hole in list order: a debugging and test view (`HoleList::debug`)."""
        load = self.cpu.load_u64
        out = []
        current = load(self.first + HOLE_NEXT)
        while current:
            out.append((current, load(current + HOLE_SIZE)))
            current = load(current + HOLE_NEXT)
        return out
