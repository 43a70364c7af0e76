"""Box, Vec, String and Rc over the linked-list heap: Rust's layouts, RawVec growth, Rc counts in memory.

The heap is 100 KiB of physical memory with paging off; expected addresses follow from the allocator's rules
(16-byte minimum, multiples of 8, first fit) and Rust's collection rules, reasoned in each test.
"""

from __future__ import annotations

import pytest

from cosim.backends import open_backend
from cosim.program import ContextLog
from firmware.allocator import AllocError, Dummy, Layout
from firmware.collections import (
    I8,
    I32,
    I64,
    U8,
    U16,
    U64,
    USIZE,
    Box,
    CapacityOverflow,
    IndexOutOfBounds,
    Rc,
    Scalar,
    String,
    UseAfterDrop,
    ValueOutOfRange,
    Vec,
    VecOf,
    min_non_zero_cap,
    rc_box_layout,
)
from firmware.cpu import Cpu
from firmware.linked_list_allocator import LockedHeap

STATIC = 0x1000
BOTTOM = 0x10000
SIZE = 100 * 1024


@pytest.fixture
def cpu() -> Cpu:
    return Cpu(open_backend("reference"))


@pytest.fixture
def alloc(cpu: Cpu) -> LockedHeap:
    locked = LockedHeap(cpu, STATIC)
    locked.write_empty()
    with locked.lock() as heap:
        heap.init(BOTTOM, SIZE)
    return locked


def holes(alloc: LockedHeap) -> list[tuple[int, int]]:
    return alloc.heap.holes.holes()


# ------------------------------------------------------------------------------------------------------------
# Box


def test_box_puts_the_value_in_the_heap(cpu: Cpu, alloc: LockedHeap) -> None:
    heap_value = Box.new_in(41, alloc)
    assert heap_value.ptr == BOTTOM
    assert cpu.load_u32(BOTTOM) == 41
    assert heap_value.get() == 41
    heap_value.set(-7)
    assert cpu.load_u32(BOTTOM) == (1 << 32) - 7
    assert heap_value.get() == -7
    heap_value.drop()
    assert holes(alloc) == [(BOTTOM, SIZE)]


@pytest.mark.parametrize(("ty", "value", "raw"), [
    (U8, 255, 255), (I8, -1, 0xFF), (U16, 65535, 65535), (I64, -2, (1 << 64) - 2), (U64, U64.high, U64.high),
])
def test_box_stores_each_type_with_its_size(
    cpu: Cpu, alloc: LockedHeap, ty: Scalar, value: int, raw: int
) -> None:
    boxed = Box.new_in(value, alloc, ty)
    assert cpu.load(boxed.ptr, ty.size_log2) == raw
    assert boxed.get() == value
    assert alloc.heap.used() == 16  # every type here is at most 8 bytes: the 16-byte minimum block


def test_boxes_take_16_bytes_each(alloc: LockedHeap) -> None:
    boxes = [Box.new_in(i, alloc, USIZE) for i in range(3)]
    assert [b.ptr for b in boxes] == [BOTTOM, BOTTOM + 16, BOTTOM + 32]


@pytest.mark.parametrize(("ty", "value"), [(U8, 256), (U8, -1), (I8, -129), (I32, 1 << 31), (U64, 1.0)])
def test_values_that_do_not_fit_the_type_are_refused(alloc: LockedHeap, ty: object, value: object) -> None:
    with pytest.raises(ValueOutOfRange):
        Box.new_in(value, alloc, ty)


def test_box_use_after_drop_is_refused(alloc: LockedHeap) -> None:
    boxed = Box.new_in(1, alloc)
    boxed.drop()
    with pytest.raises(UseAfterDrop):
        boxed.get()
    with pytest.raises(UseAfterDrop):
        boxed.drop()


def test_box_dropped_at_end_of_with_block(alloc: LockedHeap) -> None:
    with Box.new_in(5, alloc) as boxed:
        assert boxed.get() == 5
    assert alloc.heap.used() == 0


def test_box_on_the_dummy_allocator_fails_with_rusts_message(cpu: Cpu) -> None:
    with pytest.raises(AllocError, match=r"^memory allocation of 4 bytes failed$") as caught:
        Box.new_in(41, Dummy(cpu))
    assert caught.value.layout == Layout(4, 4)


# ------------------------------------------------------------------------------------------------------------
# Vec: RawVec growth


def test_min_non_zero_cap_by_element_size() -> None:
    assert min_non_zero_cap(Layout(1, 1)) == 8
    assert min_non_zero_cap(Layout(2, 2)) == 4
    assert min_non_zero_cap(Layout(1024, 8)) == 4
    assert min_non_zero_cap(Layout(1025, 1)) == 1


@pytest.mark.parametrize(("elem", "first"), [(U8, 8), (U16, 4), (I32, 4), (U64, 4)])
def test_vec_capacity_grows_from_min_non_zero_cap_then_doubles(
    alloc: LockedHeap, elem: Scalar, first: int
) -> None:
    vec = Vec.new_in(alloc, elem)
    capacities = []
    for i in range(100):
        vec.push(i)
        if not capacities or capacities[-1] != vec.capacity():
            capacities.append(vec.capacity())
    expected = [first]
    while expected[-1] < 100:
        expected.append(expected[-1] * 2)
    assert capacities == expected
    assert vec.to_list() == list(range(100))


def test_new_vec_allocates_nothing_and_dangles_at_its_alignment(alloc: LockedHeap) -> None:
    assert Vec.new_in(alloc, U64).as_ptr() == 8
    assert Vec.new_in(alloc, I32).as_ptr() == 4
    assert alloc.heap.used() == 0


def test_vec_grows_with_realloc_after_the_first_allocation(cpu: Cpu, alloc: LockedHeap) -> None:
    vec = Vec.new_in(alloc, I32)
    cpu.listener = log = ContextLog()
    for i in range(5):
        vec.push(i)
    allocator_calls = [span.label for span in log.spans if not span.label.startswith("Vec::push")]
    # cap 0 -> 4: a plain alloc of 4 i32; cap 4 -> 8: realloc (alloc 32 bytes, copy, dealloc the old 16)
    assert allocator_calls == [
        "alloc(16, 4)", f"realloc({BOTTOM:#x}, 16, 4, 32)", "alloc(32, 4)", f"dealloc({BOTTOM:#x}, 16, 4)",
    ]


def test_vec_of_500_i32_after_a_box_starts_0x800_into_the_heap(alloc: LockedHeap) -> None:
    """The seed's `vec at 0x...0800`: each regrowth allocates above the old buffer while the freed buffers
    merge below it into a hole too small for the next capacity, so the 512-element buffer lands at 0x800."""
    Box.new_in(41, alloc)
    vec = Vec.new_in(alloc, I32)
    for i in range(500):
        vec.push(i)
    assert vec.capacity() == 512
    assert vec.as_ptr() == BOTTOM + 0x800
    # the old buffers, 0x10..0x400 (16 + 32 + ... + 1024 bytes), merged into one hole
    assert holes(alloc)[0] == (BOTTOM + 0x10, 0x800 - 0x10)
    assert sum(vec) == sum(range(500))


def test_vec_macro_allocates_exactly_its_length(cpu: Cpu, alloc: LockedHeap) -> None:
    vec = Vec.from_iter_in([1, 2, 3], alloc)
    assert vec.capacity() == 3
    assert alloc.heap.live_blocks() == {BOTTOM: Layout(12, 4)}
    assert [cpu.load_u32(BOTTOM + 4 * i) for i in range(3)] == [1, 2, 3]


def test_with_capacity_and_reserve(alloc: LockedHeap) -> None:
    vec = Vec.with_capacity_in(5, alloc, U64)
    assert (vec.capacity(), alloc.heap.live_blocks()) == (5, {BOTTOM: Layout(40, 8)})
    vec.extend_from_slice(range(5))
    vec.reserve(1)  # full: max(2 * 5, 6, 4) = 10
    assert vec.capacity() == 10
    vec.reserve(20)  # needs 25 > 2 * 10
    assert vec.capacity() == 25
    vec.reserve(20)  # 25 - 5 >= 20: nothing to do
    assert vec.capacity() == 25


def test_vec_elements_pop_and_bounds(alloc: LockedHeap) -> None:
    vec = Vec.from_iter_in([-1, 2, -3], alloc, I8)
    assert vec[0] == -1
    vec[1] = -128
    assert vec.to_list() == [-1, -128, -3]
    assert vec.pop() == -3
    assert len(vec) == 2
    with pytest.raises(IndexOutOfBounds, match="index out of bounds: the len is 2 but the index is 2"):
        vec[2]


def test_vec_drop_frees_its_buffer(alloc: LockedHeap) -> None:
    vec = Vec.from_iter_in(range(10), alloc, U64)
    vec.drop()
    assert holes(alloc) == [(BOTTOM, SIZE)]
    with pytest.raises(UseAfterDrop):
        vec.push(1)


def test_capacity_overflow_is_rusts_panic(alloc: LockedHeap) -> None:
    with pytest.raises(CapacityOverflow, match="capacity overflow"):
        Vec.with_capacity_in(1 << 61, alloc, U64)
    vec = Vec.from_iter_in([1], alloc, U64)
    with pytest.raises(CapacityOverflow):
        vec.reserve(1 << 62)


def test_vec_that_cannot_grow_ends_in_handle_alloc_error(alloc: LockedHeap) -> None:
    vec = Vec.with_capacity_in(60000, alloc, U8)
    vec.extend_from_slice(bytes(60000))
    with pytest.raises(AllocError, match="memory allocation of 120000 bytes failed") as caught:
        vec.push(1)
    assert caught.value.layout == Layout(120000, 1)
    assert vec.capacity() == 60000  # the old buffer is still the Vec's


# ------------------------------------------------------------------------------------------------------------
# String


def test_string_from_allocates_exactly_and_grows_like_vec_u8(alloc: LockedHeap) -> None:
    text = String.from_str_in("hello", alloc)
    assert (len(text), text.capacity()) == (5, 5)
    text.push_str(", world")  # needs 12 > max(2 * 5, 8)
    assert text.capacity() == 12
    text.push("!")  # one byte: Vec::push doubles to 24
    assert text.capacity() == 24
    text.push("é")  # two bytes of UTF-8
    assert text.as_str() == "hello, world!é"
    assert len(text) == 15
    text.drop()
    assert alloc.heap.used() == 0


def test_empty_string_allocates_nothing(alloc: LockedHeap) -> None:
    String.new_in(alloc)
    assert alloc.heap.used() == 0


# ------------------------------------------------------------------------------------------------------------
# Rc and Weak


def test_rc_box_layout() -> None:
    assert rc_box_layout(I32) == (Layout(24, 8), 16)
    assert rc_box_layout(U8) == (Layout(24, 8), 16)
    assert rc_box_layout(VecOf(I32)) == (Layout(40, 8), 16)


def test_rc_counts_live_in_memory(cpu: Cpu, alloc: LockedHeap) -> None:
    rc = Rc.new_in(7, alloc)
    assert [cpu.load_u64(rc.ptr), cpu.load_u64(rc.ptr + 8), cpu.load_u32(rc.ptr + 16)] == [1, 1, 7]
    clone = rc.clone()
    assert cpu.load_u64(rc.ptr) == 2
    assert rc.strong_count() == clone.strong_count() == 2
    rc.drop()
    assert cpu.load_u64(clone.ptr) == 1
    assert clone.get() == 7
    clone.drop()
    assert holes(alloc) == [(BOTTOM, SIZE)]


def test_rc_of_vec_drops_the_vec_then_frees_the_rc_box(cpu: Cpu, alloc: LockedHeap) -> None:
    vec = Vec.from_iter_in([1, 2, 3], alloc)
    rc = Rc.new_in(vec, alloc, VecOf(I32))
    # vec![1, 2, 3] took 16 bytes at BOTTOM; the 40-byte RcBox follows, holding ptr, cap, len
    assert rc.ptr == BOTTOM + 16
    assert [cpu.load_u64(rc.ptr + 16 + 8 * i) for i in range(3)] == [BOTTOM, 3, 3]
    with pytest.raises(UseAfterDrop):
        vec.push(4)  # moved into the Rc
    assert rc.get().to_list() == [1, 2, 3]
    with pytest.raises(UseAfterDrop, match="cannot borrow data in an `Rc` as mutable"):
        rc.get().push(4)
    cpu.listener = log = ContextLog()
    rc.drop()
    assert [span.label for span in log.spans] == [f"dealloc({BOTTOM:#x}, 12, 4)", f"dealloc({BOTTOM + 16:#x}, 40, 8)"]
    assert holes(alloc) == [(BOTTOM, SIZE)]


def test_weak_keeps_the_rc_box_but_not_the_value(cpu: Cpu, alloc: LockedHeap) -> None:
    rc = Rc.new_in(Vec.from_iter_in([9], alloc), alloc, VecOf(I32))
    weak = rc.downgrade()
    assert (rc.weak_count(), cpu.load_u64(rc.ptr + 8)) == (1, 2)
    upgraded = weak.upgrade()
    assert upgraded is not None and rc.strong_count() == 2
    upgraded.drop()
    rc.drop()
    # the value (and its buffer) is gone, the RcBox stays for the Weak
    assert alloc.heap.live_blocks() == {BOTTOM + 16: Layout(40, 8)}
    assert weak.strong_count() == 0
    assert weak.upgrade() is None
    weak.drop()
    assert holes(alloc) == [(BOTTOM, SIZE)]
