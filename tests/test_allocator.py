"""The linked-list allocator against linked_list_allocator 0.9.1: the crate's test situations, with addresses
derived by hand from its algorithm, plus the GlobalAlloc protocol, Layout rules and misuse detection.

The heap sits in physical memory with paging off: the allocator does not care whether addresses are virtual.
"""

from __future__ import annotations

import pytest

from cosim.backends import open_backend
from cosim.program import ContextLog
from firmware.allocator import (
    ISIZE_MAX,
    AllocError,
    Dummy,
    KernelPanic,
    Layout,
    LayoutError,
    alloc_error_handler,
)
from firmware.cpu import Cpu
from firmware.linked_list_allocator import (
    DoubleFree,
    ForeignFree,
    Heap,
    LayoutMismatch,
    LockedHeap,
    SpinlockDeadlock,
)
from hdl.protocol import Op

STATIC = 0x1000  # where the Heap / LockedHeap value lives
BOTTOM = 0x10000  # heap memory, 64 KiB aligned
HEAP_SIZE = 1000  # the crate's test heap


@pytest.fixture
def cpu() -> Cpu:
    return Cpu(open_backend("reference"))


def new_heap(cpu: Cpu, size: int = HEAP_SIZE, bottom: int = BOTTOM) -> Heap:
    heap = Heap(cpu, STATIC)
    heap.write_empty()
    heap.init(bottom, size)
    return heap


def hole_size_at(cpu: Cpu, addr: int) -> int:
    """`(*(addr as *const Hole)).size`, read straight from memory."""
    return cpu.load_u64(addr)


def layout(size: int, align: int) -> Layout:
    return Layout.from_size_align(size, align)


# ------------------------------------------------------------------------------------------------------------
# The crate's tests


def test_empty(cpu: Cpu) -> None:
    heap = Heap(cpu, STATIC)
    heap.write_empty()
    assert heap.allocate_first_fit(layout(1, 1)) is None


def test_oom(cpu: Cpu) -> None:
    heap = new_heap(cpu)
    assert heap.allocate_first_fit(layout(HEAP_SIZE + 1, 8)) is None


def test_allocate_double_usize(cpu: Cpu) -> None:
    heap = new_heap(cpu)
    addr = heap.allocate_first_fit(layout(16, 8))
    assert addr == BOTTOM
    assert heap.holes.holes() == [(BOTTOM + 16, HEAP_SIZE - 16)]
    assert hole_size_at(cpu, addr + 16) == HEAP_SIZE - 16


def test_allocate_and_free_double_usize(cpu: Cpu) -> None:
    heap = new_heap(cpu)
    x = heap.allocate_first_fit(layout(16, 8))
    cpu.store_u64(x, 0xDEAFDEADBEAFBABE)
    cpu.store_u64(x + 8, 0xDEAFDEADBEAFBABE)
    heap.deallocate(x, layout(16, 8))
    assert cpu.load_u64(STATIC + 24 + 8) == BOTTOM  # first.next, in the Heap value
    assert hole_size_at(cpu, BOTTOM) == HEAP_SIZE
    assert cpu.load_u64(BOTTOM + 8) == 0  # next: None


def _three_blocks(heap: Heap, size: int) -> tuple[int, ...]:
    return tuple(heap.allocate_first_fit(layout(size, 1)) for _ in range(3))


def test_deallocate_right_before(cpu: Cpu) -> None:
    heap, size = new_heap(cpu), 40
    x, y, z = _three_blocks(heap, size)
    heap.deallocate(y, layout(size, 1))
    assert hole_size_at(cpu, y) == size
    heap.deallocate(x, layout(size, 1))
    assert hole_size_at(cpu, x) == 2 * size
    heap.deallocate(z, layout(size, 1))
    assert hole_size_at(cpu, x) == HEAP_SIZE


def test_deallocate_right_behind(cpu: Cpu) -> None:
    heap, size = new_heap(cpu), 40
    x, y, z = _three_blocks(heap, size)
    heap.deallocate(x, layout(size, 1))
    assert hole_size_at(cpu, x) == size
    heap.deallocate(y, layout(size, 1))
    assert hole_size_at(cpu, x) == 2 * size
    heap.deallocate(z, layout(size, 1))
    assert hole_size_at(cpu, x) == HEAP_SIZE


def test_deallocate_middle(cpu: Cpu) -> None:
    heap, size = new_heap(cpu), 40
    x, y, z = _three_blocks(heap, size)
    a = heap.allocate_first_fit(layout(size, 1))
    heap.deallocate(x, layout(size, 1))
    assert hole_size_at(cpu, x) == size
    heap.deallocate(z, layout(size, 1))
    assert hole_size_at(cpu, x) == size
    assert hole_size_at(cpu, z) == size
    heap.deallocate(y, layout(size, 1))
    assert hole_size_at(cpu, x) == 3 * size
    heap.deallocate(a, layout(size, 1))
    assert hole_size_at(cpu, x) == HEAP_SIZE


def test_reallocate_double_usize(cpu: Cpu) -> None:
    heap = new_heap(cpu)
    x = heap.allocate_first_fit(layout(16, 8))
    heap.deallocate(x, layout(16, 8))
    y = heap.allocate_first_fit(layout(16, 8))
    heap.deallocate(y, layout(16, 8))
    assert x == y


def test_allocate_multiple_sizes(cpu: Cpu) -> None:
    heap = new_heap(cpu)
    x = heap.allocate_first_fit(layout(16, 8))
    y = heap.allocate_first_fit(layout(56, 8))
    assert y == x + 16
    z = heap.allocate_first_fit(layout(24, 32))
    # the hole at BOTTOM + 72 is not 32-aligned: front padding to align_up(BOTTOM + 72 + 16, 32)
    assert z == BOTTOM + 96
    heap.deallocate(x, layout(16, 8))
    # holes: [BOTTOM, 16), the 24-byte front padding at BOTTOM + 72, the rest after z: `a` fits the last only
    a = heap.allocate_first_fit(layout(32, 8))
    assert a == z + 24
    b = heap.allocate_first_fit(layout(16, 8))
    assert b == x
    for ptr, lay in ((y, layout(56, 8)), (z, layout(24, 32)), (a, layout(32, 8)), (b, layout(16, 8))):
        heap.deallocate(ptr, lay)
    assert heap.holes.holes() == [(BOTTOM, HEAP_SIZE)]


@pytest.mark.parametrize("offset", range(17))
def test_allocate_multiple_unaligned(cpu: Cpu, offset: int) -> None:
    heap = new_heap(cpu, HEAP_SIZE - offset, BOTTOM + offset)
    x = heap.allocate_first_fit(layout(16, 8))
    assert x == BOTTOM + (-offset % 8) + offset  # the first hole starts at the bottom aligned up to 8
    y = heap.allocate_first_fit(layout(56, 8))
    assert y == x + 16
    z = heap.allocate_first_fit(layout(24, 32))
    assert z % 32 == 0
    heap.deallocate(x, layout(16, 8))
    a = heap.allocate_first_fit(layout(32, 8))
    b = heap.allocate_first_fit(layout(16, 8))
    assert b == x
    for ptr, lay in ((y, layout(56, 8)), (z, layout(24, 32)), (a, layout(32, 8)), (b, layout(16, 8))):
        heap.deallocate(ptr, lay)
    assert len(heap.holes.holes()) == 1


def test_allocate_usize(cpu: Cpu) -> None:
    heap = new_heap(cpu)
    assert heap.allocate_first_fit(layout(8, 1)) == BOTTOM


def test_allocate_usize_in_bigger_block(cpu: Cpu) -> None:
    heap = new_heap(cpu)
    x = heap.allocate_first_fit(layout(16, 1))
    y = heap.allocate_first_fit(layout(16, 1))
    heap.deallocate(x, layout(16, 1))
    z = heap.allocate_first_fit(layout(8, 1))
    assert z == x
    heap.deallocate(y, layout(16, 1))
    heap.deallocate(z, layout(8, 1))
    assert heap.holes.holes() == [(BOTTOM, HEAP_SIZE)]


def test_align_from_small_to_big(cpu: Cpu) -> None:
    """blog_os issue 160: 28 bytes at align 4, then an 8-aligned block. 0.9.1 rounds 28 up to 32."""
    heap = new_heap(cpu)
    assert heap.allocate_first_fit(layout(28, 4)) == BOTTOM
    assert heap.allocate_first_fit(layout(8, 8)) == BOTTOM + 32


def test_extend_empty_heap(cpu: Cpu) -> None:
    heap = new_heap(cpu, 1024)
    heap.extend(1024)
    assert heap.size() == 2048
    assert heap.allocate_first_fit(layout(2048, 1)) == BOTTOM


def test_extend_full_heap(cpu: Cpu) -> None:
    heap = new_heap(cpu, 1024)
    assert heap.allocate_first_fit(layout(1024, 1)) == BOTTOM
    heap.extend(1024)
    assert heap.allocate_first_fit(layout(1024, 1)) == BOTTOM + 1024


def test_extend_fragmented_heap(cpu: Cpu) -> None:
    heap = new_heap(cpu, 1024)
    alloc1 = heap.allocate_first_fit(layout(512, 1))
    heap.allocate_first_fit(layout(512, 1))
    heap.deallocate(alloc1, layout(512, 1))
    heap.extend(1024)
    assert heap.allocate_first_fit(layout(1024, 1)) == BOTTOM + 1024


def _free_pattern(blocks: list[int], strategy: int) -> list[int]:
    """The crate's four free orders: forward, backward, interleaved forward, interleaved backward."""
    ordered = blocks if strategy in (0, 2) else blocks[::-1]
    if strategy < 2:
        return ordered
    return ordered[0::2] + ordered[1::2]


def _allocate_many_size_aligns(cpu: Cpu, sizes: range, aligns: range) -> None:
    heap = new_heap(cpu)
    full = layout(HEAP_SIZE, 1)
    heap.deallocate(heap.allocate_first_fit(full), full)
    for strategy in range(4):
        for align_log2 in aligns:
            for size in sizes:
                lay = layout(size, 1 << align_log2)
                blocks = []
                while (ptr := heap.allocate_first_fit(lay)) is not None:
                    assert ptr % lay.align == 0
                    blocks.append(ptr)
                assert blocks, f"not even one block of {lay!r} fits in an empty heap"
                for ptr in _free_pattern(blocks, strategy):
                    heap.deallocate(ptr, lay)
                # everything merged back: the whole heap is one hole again
                assert heap.holes.holes() == [(BOTTOM, HEAP_SIZE)]
                assert heap.used() == 0
                heap.deallocate(heap.allocate_first_fit(full), full)


def test_allocate_many_size_aligns(cpu: Cpu) -> None:
    """The crate's grid with every 7th size: sizes 1, 8, ... 512, aligns 1 << 0..10, four free orders."""
    _allocate_many_size_aligns(cpu, range(1, 513, 7), range(10))


@pytest.mark.slow
def test_allocate_many_size_aligns_full(cpu: Cpu) -> None:
    """The crate's whole grid: sizes 1..=512 (3.3 M memory operations)."""
    _allocate_many_size_aligns(cpu, range(1, 513), range(10))


# ------------------------------------------------------------------------------------------------------------
# Placement rules, one situation each


def test_min_size_is_16_and_sizes_round_up_to_8(cpu: Cpu) -> None:
    heap = new_heap(cpu)
    a = heap.allocate_first_fit(layout(1, 1))
    b = heap.allocate_first_fit(layout(17, 1))
    c = heap.allocate_first_fit(layout(8, 8))
    assert (a, b, c) == (BOTTOM, BOTTOM + 16, BOTTOM + 16 + 24)
    assert heap.used() == 16 + 24 + 16


def test_front_padding_becomes_a_hole(cpu: Cpu) -> None:
    heap = new_heap(cpu)
    heap.allocate_first_fit(layout(16, 8))
    block = heap.allocate_first_fit(layout(16, 64))
    assert block == BOTTOM + 64  # align_up(BOTTOM + 16 + 16, 64)
    assert heap.holes.holes() == [(BOTTOM + 16, 48), (BOTTOM + 80, HEAP_SIZE - 80)]


def test_front_padding_is_at_least_min_size(cpu: Cpu) -> None:
    """A hole 8 bytes below a 64-byte boundary cannot keep an 8-byte front padding: the block moves one more
    alignment step up."""
    heap = new_heap(cpu)
    heap.allocate_first_fit(layout(56, 8))
    block = heap.allocate_first_fit(layout(16, 64))
    assert block == BOTTOM + 128  # align_up(BOTTOM + 56 + 16, 64), not BOTTOM + 64
    assert heap.holes.holes()[0] == (BOTTOM + 56, 72)


def test_back_remainder_below_min_size_makes_a_hole_unsuitable(cpu: Cpu) -> None:
    heap = new_heap(cpu)
    x = heap.allocate_first_fit(layout(24, 8))
    heap.allocate_first_fit(layout(16, 8))
    heap.deallocate(x, layout(24, 8))
    assert heap.holes.holes() == [(BOTTOM, 24), (BOTTOM + 40, HEAP_SIZE - 40)]
    # 16 bytes from the 24-byte hole would leave an 8-byte hole: skipped
    assert heap.allocate_first_fit(layout(16, 8)) == BOTTOM + 40
    # 24 bytes fit it exactly
    assert heap.allocate_first_fit(layout(24, 8)) == BOTTOM


def test_holes_stay_address_ordered_and_merge(cpu: Cpu) -> None:
    heap, lay = new_heap(cpu), layout(32, 8)
    blocks = [heap.allocate_first_fit(lay) for _ in range(6)]
    for i in (4, 1, 2):
        heap.deallocate(blocks[i], lay)
    # 1 and 2 merged into one hole, inserted before the one at 4; the tail after block 5 is last
    assert heap.holes.holes() == [(blocks[1], 64), (blocks[4], 32), (blocks[5] + 32, HEAP_SIZE - 192)]
    heap.deallocate(blocks[3], lay)  # fills the gap between the two holes: all three merge
    assert heap.holes.holes() == [(blocks[1], 128), (blocks[5] + 32, HEAP_SIZE - 192)]
    heap.deallocate(blocks[5], lay)
    assert heap.holes.holes() == [(blocks[1], HEAP_SIZE - 32)]


def test_exact_fit_unlinks_the_hole(cpu: Cpu) -> None:
    heap, lay = new_heap(cpu), layout(32, 8)
    a, _ = heap.allocate_first_fit(lay), heap.allocate_first_fit(lay)
    heap.deallocate(a, lay)
    assert heap.allocate_first_fit(lay) == a
    assert heap.holes.holes() == [(BOTTOM + 64, HEAP_SIZE - 64)]


def test_hole_size_is_not_rounded_down_in_0_9_1(cpu: Cpu) -> None:
    heap = new_heap(cpu, 1003, BOTTOM + 3)
    assert heap.holes.holes() == [(BOTTOM + 8, 998)]
    assert heap.size() == 1003


# ------------------------------------------------------------------------------------------------------------
# Misuse: detected, and the heap is left exactly as it was


def _snapshot(cpu: Cpu) -> bytes:
    return cpu.read_bytes(STATIC, 48) + cpu.read_bytes(BOTTOM, HEAP_SIZE)


def test_double_free_is_detected_and_heap_intact(cpu: Cpu) -> None:
    heap, lay = new_heap(cpu), layout(16, 8)
    a = heap.allocate_first_fit(lay)
    heap.allocate_first_fit(lay)
    heap.deallocate(a, lay)
    before = _snapshot(cpu)
    with pytest.raises(DoubleFree, match="double free of 0x10000"):
        heap.deallocate(a, lay)
    assert _snapshot(cpu) == before


def test_foreign_free_is_detected_and_heap_intact(cpu: Cpu) -> None:
    heap, lay = new_heap(cpu), layout(16, 8)
    a = heap.allocate_first_fit(lay)
    before = _snapshot(cpu)
    with pytest.raises(ForeignFree):
        heap.deallocate(a + 8, lay)
    assert _snapshot(cpu) == before


def test_free_with_another_layout_is_detected(cpu: Cpu) -> None:
    heap = new_heap(cpu)
    a = heap.allocate_first_fit(layout(16, 8))
    with pytest.raises(LayoutMismatch):
        heap.deallocate(a, layout(32, 8))
    heap.deallocate(a, layout(16, 8))  # the right free still works


def test_reused_address_can_be_freed_again(cpu: Cpu) -> None:
    heap, lay = new_heap(cpu), layout(16, 8)
    a = heap.allocate_first_fit(lay)
    heap.deallocate(a, lay)
    assert heap.allocate_first_fit(lay) == a
    heap.deallocate(a, lay)


# ------------------------------------------------------------------------------------------------------------
# Layout


@pytest.mark.parametrize(("size", "align"), [(8, 0), (8, 3), (8, -4), (-1, 8), (ISIZE_MAX - 6, 8), (1.5, 8)])
def test_invalid_layouts_are_layout_errors(size: int, align: int) -> None:
    with pytest.raises(LayoutError, match="invalid parameters to Layout::from_size_align"):
        Layout.from_size_align(size, align)


def test_largest_layouts_are_valid() -> None:
    assert Layout.from_size_align(ISIZE_MAX - 7, 8).size == ISIZE_MAX - 7
    assert Layout.from_size_align(ISIZE_MAX, 1).align == 1
    assert Layout.from_size_align(0, 1 << 62) == Layout(0, 1 << 62)


def test_array_layout_overflow() -> None:
    assert Layout.array(Layout(4, 4), 3) == Layout(12, 4)
    with pytest.raises(LayoutError):
        Layout.array(Layout(8, 8), 1 << 60)


def test_layout_debug_format() -> None:
    assert repr(Layout(4, 4)) == "Layout { size: 4, align: 4 }"


# ------------------------------------------------------------------------------------------------------------
# GlobalAlloc: LockedHeap and Dummy


def new_locked_heap(cpu: Cpu, size: int = HEAP_SIZE) -> LockedHeap:
    locked = LockedHeap(cpu, STATIC)
    locked.write_empty()
    with locked.lock() as heap:
        heap.init(BOTTOM, size)
    return locked


def test_locked_heap_layout_in_memory(cpu: Cpu) -> None:
    locked = new_locked_heap(cpu)
    locked.alloc(layout(16, 8))
    words = [cpu.load_u64(STATIC + 8 * i) for i in range(6)]
    # lock, bottom, size, used, holes.first.size (dummy), holes.first.next
    assert words == [0, BOTTOM, HEAP_SIZE, 16, 0, BOTTOM + 16]


def test_alloc_returns_null_when_full(cpu: Cpu) -> None:
    locked = new_locked_heap(cpu)
    assert locked.alloc(layout(HEAP_SIZE, 8)) == BOTTOM
    assert locked.alloc(layout(1, 1)) == 0


def test_allocating_while_the_lock_is_held_deadlocks(cpu: Cpu) -> None:
    locked = new_locked_heap(cpu)
    with locked.lock(), pytest.raises(SpinlockDeadlock):
        locked.alloc(layout(8, 8))
    assert cpu.load_u8(STATIC) == 0


def test_alloc_zeroed_clears_the_block(cpu: Cpu) -> None:
    locked = new_locked_heap(cpu)
    first = locked.alloc(layout(32, 8))
    cpu.fill(first, 32, 0xAB)
    locked.dealloc(first, layout(32, 8))
    again = locked.alloc_zeroed(layout(32, 8))
    assert again == first
    assert cpu.read_bytes(again, 32) == bytes(32)


def test_realloc_allocates_copies_then_frees(cpu: Cpu) -> None:
    locked = new_locked_heap(cpu)
    old = locked.alloc(layout(16, 8))
    cpu.write_bytes(old, bytes(range(16)))
    new = locked.realloc(old, layout(16, 8), 40)
    assert new == old + 16  # the new block is allocated while the old one is still in use
    assert cpu.read_bytes(new, 16) == bytes(range(16))
    assert locked.heap.holes.holes() == [(old, 16), (new + 40, HEAP_SIZE - 56)]


def test_realloc_that_cannot_grow_returns_null_and_keeps_the_block(cpu: Cpu) -> None:
    locked = new_locked_heap(cpu)
    old = locked.alloc(layout(16, 8))
    cpu.store_u64(old, 42)
    assert locked.realloc(old, layout(16, 8), HEAP_SIZE) == 0
    assert cpu.load_u64(old) == 42
    locked.dealloc(old, layout(16, 8))


def test_realloc_shrinking_copies_the_smaller_size(cpu: Cpu) -> None:
    locked = new_locked_heap(cpu)
    old = locked.alloc(layout(32, 8))
    cpu.write_bytes(old, bytes(range(1, 33)))
    new = locked.realloc(old, layout(32, 8), 16)
    assert cpu.read_bytes(new, 16) == bytes(range(1, 17))


def test_dummy_never_allocates(cpu: Cpu) -> None:
    dummy = Dummy(cpu)
    assert dummy.alloc(layout(4, 4)) == 0
    assert dummy.alloc_zeroed(layout(4, 4)) == 0
    with pytest.raises(KernelPanic, match="dealloc should be never called"):
        dummy.dealloc(0x1000, layout(4, 4))


def test_alloc_error_handler_uses_rusts_wording() -> None:
    with pytest.raises(AllocError) as caught:
        alloc_error_handler(Layout(4, 4))
    assert str(caught.value) == "memory allocation of 4 bytes failed"
    assert caught.value.seed_panic_message == "allocation error: Layout { size: 4, align: 4 }"


def test_global_alloc_calls_are_labelled_for_traces(cpu: Cpu) -> None:
    locked = new_locked_heap(cpu)
    cpu.listener = log = ContextLog()
    ptr = locked.alloc(layout(16, 8))
    ptr = locked.realloc(ptr, layout(16, 8), 32)
    locked.dealloc(ptr, layout(32, 8))
    assert [span.label for span in log.spans] == [
        "alloc(16, 8)", "realloc(0x10000, 16, 8, 32)", "alloc(32, 8)", "dealloc(0x10000, 16, 8)",
        "dealloc(0x10010, 32, 8)",
    ]


def test_allocation_memory_traffic_follows_the_crate() -> None:
    """One alloc from a fresh heap, access by access: the spinlock, the dummy hole's `next` in the static, the
    hole's node, `take()` leaving 0 inside the block, the back-padding node, the link, `used`, the unlock."""
    backend = open_backend("reference", trace=True)
    locked = new_locked_heap(Cpu(backend))
    backend.drain_events()
    locked.alloc(layout(16, 8))
    first_next, used = STATIC + 8 + 24 + 8, STATIC + 8 + 16
    accesses = [(Op(e.op).name, e.vaddr, e.size, e.data) for e in backend.drain_events()]
    assert accesses == [
        ("LOAD", STATIC, 1, 0), ("STORE", STATIC, 1, 1),  # lock: compare_exchange(false, true)
        ("LOAD", first_next, 8, BOTTOM),
        ("LOAD", BOTTOM, 8, HEAP_SIZE), ("LOAD", BOTTOM + 8, 8, 0),  # the hole's size and next
        ("STORE", BOTTOM + 8, 8, 0),  # current.next.take()
        ("STORE", BOTTOM + 16, 8, HEAP_SIZE - 16), ("STORE", BOTTOM + 24, 8, 0),  # the back padding hole
        ("STORE", first_next, 8, BOTTOM + 16),
        ("LOAD", used, 8, 0), ("STORE", used, 8, 16),
        ("STORE", STATIC, 1, 0),  # unlock
    ]
