"""The "Allocator Designs" chapter's allocators: bump, the chapter's own linked list, fixed-size blocks.

Every expected address is worked out by hand from the chapter's Rust code (comments give the steps), relative
to the heap's bottom. The unit situations run on a small heap in physical memory with paging off (`B`, the
allocator static at `STATIC`); the kernel-level ones boot the machine and use HEAP_START (`H`).
"""

from __future__ import annotations

import pytest

from cosim.backends import open_backend
from firmware import heap_allocation_tests
from firmware.allocator import (
    ALLOCATORS,
    HEAP_SIZE,
    HEAP_START,
    ISIZE_MAX,
    USIZE_MAX,
    AllocatorAssertionFailed,
    KernelPanic,
    Layout,
    Locked,
    SpinlockDeadlock,
    UnknownAllocator,
    global_allocator,
)
from firmware.allocator.bump import LockedBumpAllocator
from firmware.allocator.fixed_size_block import BLOCK_SIZES, LockedFixedSizeBlockAllocator, list_index
from firmware.allocator.linked_list import LinkedListAllocator, LockedLinkedListAllocator
from firmware.boot import KERNEL_STATICS
from firmware.cpu import Cpu
from firmware.kernel import demo
from firmware.linked_list_allocator import ForeignFree
from firmware.replay import replay

STATIC = 0x1000  # where the Locked<...> static lives
B = 0x10000  # heap bottom, 64 KiB aligned


@pytest.fixture
def cpu() -> Cpu:
    return Cpu(open_backend("reference"))


def new(cls: type[Locked], cpu: Cpu, size: int = 1000) -> Locked:
    """A `Locked::new(X::new())` static at STATIC, then `ALLOCATOR.lock().init(B, size)`."""
    locked = cls(cpu, STATIC)
    locked.write_new()
    with locked.lock() as inner:
        inner.init(B, size)
    return locked


def L(size: int, align: int) -> Layout:  # reads like Rust's Layout
    return Layout.from_size_align(size, align)


# ------------------------------------------------------------------------------------------------------------
# Bump


def test_bump_places_blocks_back_to_back_aligning_each_start(cpu: Cpu) -> None:
    bump = new(LockedBumpAllocator, cpu)
    assert bump.alloc(L(4, 4)) == B  # next B+4
    assert bump.alloc(L(8, 8)) == B + 8  # align_up(B+4, 8); next B+16
    assert bump.alloc(L(1, 1)) == B + 16  # next B+17: the size is not rounded
    assert bump.alloc(L(16, 16)) == B + 32  # align_up(B+17, 16)
    assert bump.alloc(L(3, 2)) == B + 48


def test_bump_static_layout_is_the_struct_in_declaration_order(cpu: Cpu) -> None:
    bump = new(LockedBumpAllocator, cpu)
    bump.alloc(L(24, 8))
    # Locked: lock byte at +0, BumpAllocator at +8: heap_start, heap_end, next, allocations
    assert cpu.load_u8(STATIC) == 0
    assert [cpu.load_u64(STATIC + 8 * i) for i in range(1, 5)] == [B, B + 1000, B + 24, 1]


def test_bump_reuses_nothing_while_one_block_lives(cpu: Cpu) -> None:
    bump = new(LockedBumpAllocator, cpu)
    a, b = bump.alloc(L(8, 8)), bump.alloc(L(8, 8))
    bump.dealloc(a, L(8, 8))  # allocations 2 -> 1: next stays at B+16
    assert bump.alloc(L(8, 8)) == B + 16
    assert b == B + 8


def test_bump_resets_when_all_freed(cpu: Cpu) -> None:
    bump = new(LockedBumpAllocator, cpu)
    blocks = [bump.alloc(L(16, 8)) for _ in range(3)]
    assert blocks == [B, B + 16, B + 32]
    for ptr in blocks:  # any order: only the count matters
        bump.dealloc(ptr, L(16, 8))
    assert cpu.load_u64(STATIC + 8 + 16) == B  # next = heap_start
    assert cpu.load_u64(STATIC + 8 + 24) == 0
    assert bump.alloc(L(16, 8)) == B
    assert bump.free_regions() == [(B + 16, 1000 - 16)]


def test_bump_out_of_memory_returns_null_and_changes_nothing(cpu: Cpu) -> None:
    bump = new(LockedBumpAllocator, cpu, size=64)
    assert bump.alloc(L(60, 4)) == B
    assert bump.alloc(L(4, 4)) == B + 60  # alloc_end == heap_end still fits
    assert bump.alloc(L(1, 1)) == 0
    assert [cpu.load_u64(STATIC + 8 * i) for i in range(1, 5)] == [B, B + 64, B + 64, 2]


def test_bump_checked_add_overflow_returns_null(cpu: Cpu) -> None:
    bump = new(LockedBumpAllocator, cpu)
    assert bump.alloc(Layout(USIZE_MAX - B + 1, 1)) == 0  # alloc_start + size overflows a usize
    assert bump.alloc(L(8, 8)) == B  # nothing was bumped


def test_bump_dealloc_without_allocation_panics_and_writes_nothing(cpu: Cpu) -> None:
    bump = new(LockedBumpAllocator, cpu)
    with pytest.raises(KernelPanic, match="attempt to subtract with overflow"):
        bump.dealloc(B, L(8, 8))
    assert cpu.load_u64(STATIC + 8 + 24) == 0
    assert bump.alloc(L(8, 8)) == B  # the lock was released


# ------------------------------------------------------------------------------------------------------------
# The chapter's LinkedListAllocator


@pytest.mark.parametrize(("layout", "adjusted"), [
    ((0, 1), (16, 8)),  # align raised to 8, size to size_of::<ListNode>()
    ((1, 1), (16, 8)),
    ((17, 1), (24, 8)),  # pad_to_align: a multiple of 8
    ((8, 16), (16, 16)),
    ((20, 32), (32, 32)),
    ((100, 8), (104, 8)),
])
def test_linked_list_size_align_rounds_up_to_a_list_node(layout: tuple[int, int], adjusted: tuple[int, int]) -> None:
    assert LinkedListAllocator.size_align(L(*layout)) == adjusted


def test_linked_list_panics_when_adjusting_alignment_fails(cpu: Cpu) -> None:
    allocator = new(LockedLinkedListAllocator, cpu)
    with pytest.raises(KernelPanic, match="adjusting alignment failed: LayoutError"):
        allocator.alloc(L(ISIZE_MAX, 1))  # valid with align 1, not once align_to(8)
    assert allocator.alloc(L(8, 8)) == B


def test_linked_list_places_first_fit_and_pushes_the_rest_at_the_head(cpu: Cpu) -> None:
    allocator = new(LockedLinkedListAllocator, cpu)
    assert allocator.free_regions() == [(B, 1000)]
    assert allocator.alloc(L(8, 8)) == B  # 16 bytes
    assert allocator.free_regions() == [(B + 16, 984)]
    assert allocator.alloc(L(100, 8)) == B + 16  # 104 bytes
    assert allocator.free_regions() == [(B + 120, 880)]
    # the nodes are in memory: head (in the static, after the lock byte) -> B+120 {size 880, next None}
    assert cpu.load_u64(STATIC + 8 + 8) == B + 120
    assert (cpu.load_u64(B + 120), cpu.load_u64(B + 128)) == (880, 0)


def test_linked_list_reuses_the_last_freed_region_first(cpu: Cpu) -> None:
    allocator = new(LockedLinkedListAllocator, cpu)
    a, b, c = (allocator.alloc(L(16, 8)) for _ in range(3))
    assert (a, b, c) == (B, B + 16, B + 32)
    allocator.dealloc(a, L(16, 8))
    allocator.dealloc(b, L(16, 8))
    assert allocator.free_regions() == [(B + 16, 16), (B, 16), (B + 48, 952)]
    assert [allocator.alloc(L(16, 8)) for _ in range(3)] == [B + 16, B, B + 48]


def test_linked_list_never_merges_adjacent_free_regions(cpu: Cpu) -> None:
    allocator = new(LockedLinkedListAllocator, cpu)
    a, b = allocator.alloc(L(16, 8)), allocator.alloc(L(16, 8))
    allocator.dealloc(a, L(16, 8))
    allocator.dealloc(b, L(16, 8))
    # [B, B+32) is free, but as two 16-byte regions: a 32-byte request goes to the rest of the heap
    assert allocator.alloc(L(32, 8)) == B + 32
    assert allocator.free_regions() == [(B + 64, 936), (B + 16, 16), (B, 16)]


def test_linked_list_refuses_region_with_small_excess(cpu: Cpu) -> None:
    allocator = new(LockedLinkedListAllocator, cpu)
    a = allocator.alloc(L(24, 8))  # B..B+24
    allocator.alloc(L(16, 8))  # B+24..B+40, keeps a's region apart from the rest
    allocator.dealloc(a, L(24, 8))
    assert allocator.free_regions() == [(B, 24), (B + 40, 960)]
    # 16 bytes in the 24-byte region would leave 8, too small for a ListNode: the next region serves
    assert allocator.alloc(L(16, 8)) == B + 40
    assert allocator.free_regions() == [(B + 56, 944), (B, 24)]
    # an exact fit (excess 0) is fine, but first fit finds the big region first
    assert allocator.alloc(L(24, 8)) == B + 56


def test_linked_list_takes_an_exact_fit(cpu: Cpu) -> None:
    allocator = new(LockedLinkedListAllocator, cpu)
    a = allocator.alloc(L(24, 8))
    allocator.alloc(L(16, 8))
    allocator.dealloc(a, L(24, 8))
    assert allocator.alloc(L(20, 4)) == B  # size_align: 24 bytes, excess 0
    assert allocator.free_regions() == [(B + 40, 960)]


def test_linked_list_loses_front_padding(cpu: Cpu) -> None:
    allocator = new(LockedLinkedListAllocator, cpu)
    assert allocator.alloc(L(8, 8)) == B  # rest: B+16
    # align 32: the allocation starts at B+32 and is 32 bytes; B+16..B+32 belongs to no region any more
    assert allocator.alloc(L(16, 32)) == B + 32
    assert allocator.free_regions() == [(B + 64, 936)]
    allocator.dealloc(B + 32, L(16, 32))
    allocator.dealloc(B, L(8, 8))
    assert sum(size for _, size in allocator.free_regions()) == 1000 - 16


def test_linked_list_null_when_no_region_fits(cpu: Cpu) -> None:
    allocator = new(LockedLinkedListAllocator, cpu, size=64)
    assert allocator.alloc(L(64, 8)) == B  # exact fit: the list is empty now
    assert allocator.free_regions() == []
    assert allocator.alloc(L(1, 1)) == 0


def test_linked_list_dealloc_of_a_misaligned_pointer_is_the_chapters_assert(cpu: Cpu) -> None:
    allocator = new(LockedLinkedListAllocator, cpu)
    with pytest.raises(AllocatorAssertionFailed, match="left == right"):
        allocator.dealloc(B + 4, L(8, 8))
    assert allocator.free_regions() == [(B, 1000)]
    assert allocator.alloc(L(8, 8)) == B  # the lock was released


def test_linked_list_does_not_detect_a_double_free(cpu: Cpu) -> None:
    """As in the chapter: the region is simply in the list twice, and handed out twice."""
    allocator = new(LockedLinkedListAllocator, cpu)
    a = allocator.alloc(L(16, 8))
    allocator.dealloc(a, L(16, 8))
    allocator.dealloc(a, L(16, 8))
    assert allocator.alloc(L(16, 8)) == allocator.alloc(L(16, 8)) == B


# ------------------------------------------------------------------------------------------------------------
# FixedSizeBlockAllocator


@pytest.mark.parametrize(("layout", "index"), [
    ((1, 1), 0), ((8, 8), 0), ((9, 1), 1), ((4, 16), 1), ((24, 8), 2), ((100, 128), 4),
    ((2048, 1), 8), ((2049, 1), None), ((1, 4096), None),
])
def test_fixed_size_block_list_index_is_the_first_block_at_least_size_and_align(
        layout: tuple[int, int], index: int | None) -> None:
    assert list_index(L(*layout)) == index
    assert BLOCK_SIZES == (8, 16, 32, 64, 128, 256, 512, 1024, 2048)


def test_fixed_size_block_refills_from_fallback(cpu: Cpu) -> None:
    allocator = new(LockedFixedSizeBlockAllocator, cpu, size=4096)
    fallback = allocator.inner.fallback_allocator
    # every list is empty: each block is allocate_first_fit(Layout(block, block)) from the crate's Heap
    assert allocator.alloc(L(8, 8)) == B  # the crate makes it 16 bytes (its minimum)
    assert allocator.alloc(L(16, 16)) == B + 16
    assert allocator.alloc(L(24, 8)) == B + 32  # a 32-byte block, 32-aligned
    assert allocator.alloc(L(1, 1)) == B + 64  # another 8-byte block (16 in the crate)
    # a 64-byte block must be 64-aligned: the crate skips to B+128 and keeps B+80..B+128 as a hole
    assert allocator.alloc(L(33, 1)) == B + 128
    assert fallback.holes.holes() == [(B + 80, 48), (B + 192, 4096 - 192)]
    assert fallback.used() == 16 + 16 + 32 + 16 + 64
    assert all(allocator.inner.list_head(i) == 0 for i in range(len(BLOCK_SIZES)))


def test_fixed_size_block_dealloc_pushes_and_alloc_pops_lifo(cpu: Cpu) -> None:
    allocator = new(LockedFixedSizeBlockAllocator, cpu, size=4096)
    a, b = allocator.alloc(L(8, 8)), allocator.alloc(L(4, 4))
    assert (a, b) == (B, B + 16)
    allocator.dealloc(a, L(8, 8))
    allocator.dealloc(b, L(4, 4))  # same list: max(4, 4) <= 8
    # list_heads[0] (at +8 in the static) -> B+16 -> B -> None, the nodes written into the blocks
    assert cpu.load_u64(STATIC + 8) == B + 16
    assert (cpu.load_u64(B + 16), cpu.load_u64(B)) == (B, 0)
    assert allocator.alloc(L(2, 2)) == B + 16
    assert cpu.load_u64(B + 16) == 0  # node.next.take()
    assert allocator.alloc(L(8, 8)) == B
    assert allocator.alloc(L(8, 8)) == B + 32  # empty again: refilled from the fallback


def test_fixed_size_block_large_requests_go_to_the_fallback_and_merge_back(cpu: Cpu) -> None:
    allocator = new(LockedFixedSizeBlockAllocator, cpu, size=8192)
    fallback = allocator.inner.fallback_allocator
    assert allocator.alloc(L(3000, 8)) == B  # its own layout: 3000 bytes, align 8
    assert allocator.alloc(L(2049, 1)) == B + 3000
    allocator.dealloc(B, L(3000, 8))
    allocator.dealloc(B + 3000, L(2049, 1))
    assert fallback.holes.holes() == [(B, 8192)]  # the crate merges them
    assert allocator.free_regions() == [(B, 8192)]


def test_fixed_size_block_blocks_never_return_to_the_fallback(cpu: Cpu) -> None:
    allocator = new(LockedFixedSizeBlockAllocator, cpu, size=4096)
    assert allocator.alloc(L(2048, 8)) == B
    allocator.dealloc(B, L(2048, 8))  # onto the 2048 list, not back to the fallback
    assert allocator.free_regions() == [(B, 2048), (B + 2048, 2048)]
    assert allocator.alloc(L(3000, 8)) == 0  # 4 KiB free, but never 3000 contiguous bytes for the fallback
    assert allocator.alloc(L(1500, 8)) == B  # the 2048 list serves it


def test_fixed_size_block_static_layout(cpu: Cpu) -> None:
    allocator = new(LockedFixedSizeBlockAllocator, cpu, size=4096)
    allocator.dealloc(allocator.alloc(L(512, 512)), L(512, 512))
    # lock +0; list_heads +8..+80 (index 6 is 512); fallback Heap +80: bottom, size, used, first hole
    assert cpu.load_u64(STATIC + 8 + 6 * 8) == B
    assert [cpu.load_u64(STATIC + 80 + 8 * i) for i in range(3)] == [B, 4096, 512]
    assert cpu.load_u64(STATIC + 80 + 32) == B + 512  # holes.first.next


def test_fixed_size_block_dealloc_of_null_large_block_panics(cpu: Cpu) -> None:
    allocator = new(LockedFixedSizeBlockAllocator, cpu, size=4096)
    with pytest.raises(KernelPanic, match="unwrap"):
        allocator.dealloc(0, L(4096, 8))


def test_fixed_size_block_foreign_large_free_is_refused_by_the_crate_port(cpu: Cpu) -> None:
    allocator = new(LockedFixedSizeBlockAllocator, cpu, size=8192)
    with pytest.raises(ForeignFree):
        allocator.dealloc(B + 64, L(4096, 8))
    assert allocator.free_regions() == [(B, 8192)]


@pytest.mark.parametrize("cls", [LockedBumpAllocator, LockedLinkedListAllocator, LockedFixedSizeBlockAllocator])
def test_locked_spinlock_held_is_a_deadlock(cpu: Cpu, cls: type[Locked]) -> None:
    allocator = new(cls, cpu)
    with allocator.lock(), pytest.raises(SpinlockDeadlock):
        allocator.alloc(L(8, 8))


@pytest.mark.parametrize("cls", [LockedBumpAllocator, LockedLinkedListAllocator, LockedFixedSizeBlockAllocator])
def test_calls_open_the_same_contexts_as_locked_heap(cpu: Cpu, cls: type[Locked]) -> None:
    allocator = new(cls, cpu)
    labels: list[str] = []

    class Listener:
        def enter(self, label: str, seq: int) -> None:
            labels.append(label)

        def exit(self, seq: int) -> None:
            pass

    cpu.listener = Listener()
    ptr = allocator.alloc(L(8, 8))
    ptr = allocator.realloc(ptr, L(8, 8), 24)
    allocator.dealloc(ptr, L(24, 8))
    assert [label.split("(")[0] for label in labels] == ["alloc", "realloc", "alloc", "dealloc", "dealloc"]
    assert labels[0] == "alloc(8, 8)"
    assert labels[-1] == f"dealloc({ptr:#x}, 24, 8)"


# ------------------------------------------------------------------------------------------------------------
# In the kernel: the registry, the seed's tests, replay


def test_unknown_allocator_is_refused_before_the_machine_boots(cpu: Cpu) -> None:
    with pytest.raises(UnknownAllocator, match="choose one of lla, bump, linked-list, fixed-size-block"):
        demo(cpu, allocator="slab")
    with pytest.raises(UnknownAllocator):
        heap_allocation_tests.many_boxes(cpu, n=1, allocator="buddy")
    with pytest.raises(UnknownAllocator):
        replay(cpu, ['{"op":"alloc","id":0,"size":8,"align":8}'], allocator="Bump")
    assert cpu.ops == 0


def test_every_allocator_static_is_at_kernel_statics(cpu: Cpu) -> None:
    assert list(ALLOCATORS) == ["lla", "bump", "linked-list", "fixed-size-block"]
    for name in ALLOCATORS:
        assert global_allocator(cpu, name).addr == KERNEL_STATICS
    assert cpu.ops == 0  # handles touch no memory


SEED_TESTS = {
    # test: (n, {allocator: what the test returns besides test, n, result and leaked_blocks})
    "simple_allocation": (1, {
        "lla": {"boxes": [HEAP_START, HEAP_START + 16]},
        "bump": {"boxes": [HEAP_START, HEAP_START + 4]},  # i32 boxes: Layout(4, 4), back to back
        "linked-list": {"boxes": [HEAP_START, HEAP_START + 16]},  # size_align: 16 bytes each
        "fixed-size-block": {"boxes": [HEAP_START, HEAP_START + 16]},  # 8-byte blocks, 16 in the fallback
    }),
    "large_vec": (1000, {
        # Vec<u64> grows 4, 8, ..., 1024 elements: blocks of 32 << k bytes. Bump and the chapter's list place
        # each at the end of the previous one (the freed smaller blocks never fit): 32 * (2^8 - 1) = 0x1fe0.
        "lla": {"vec": HEAP_START + 0x1FE0},
        "bump": {"vec": HEAP_START + 0x1FE0},
        "linked-list": {"vec": HEAP_START + 0x1FE0},
        # blocks 32..2048 are size-aligned (32 at 0, 64 at 64, ..., 2048 at 2048), 4096 and 8192 go to the
        # fallback with align 8 after the 2048 block: 4096 at 0x1000, 8192 at 0x2000.
        "fixed-size-block": {"vec": HEAP_START + 0x2000},
    }),
    "many_boxes": (300, {name: {"last_box": HEAP_START} for name in ALLOCATORS}),
    "many_boxes_long_lived": (300, {
        "lla": {"long_lived": HEAP_START, "last_box": HEAP_START + 16},
        # long_lived: 4 bytes at H; box i: align_up(H + 4, 8) + 8 * i, never reused
        "bump": {"long_lived": HEAP_START, "last_box": HEAP_START + 8 + 8 * 299},
        "linked-list": {"long_lived": HEAP_START, "last_box": HEAP_START + 16},
        "fixed-size-block": {"long_lived": HEAP_START, "last_box": HEAP_START + 16},
    }),
}


@pytest.mark.parametrize("allocator", list(ALLOCATORS))
@pytest.mark.parametrize("test", list(SEED_TESTS))
def test_seed_test_passes_on_every_allocator(cpu: Cpu, test: str, allocator: str) -> None:
    n, expected = SEED_TESTS[test]
    summary = getattr(heap_allocation_tests, test)(cpu, n=n, allocator=allocator)
    assert (summary["result"], summary["leaked_blocks"]) == ("ok", 0)
    for key, value in expected[allocator].items():
        shown = [f"{v:#x}" for v in value] if isinstance(value, list) else f"{value:#x}"
        assert summary[key] == shown, key


# Bump's many_boxes_long_lived (the chapter: "many_boxes_long_lived... [failed]"). long_lived = Box::new(1) is
# an i32, Layout(4, 4), at H: next = H + 4, allocations = 1. Box i (a usize, Layout(8, 8)) starts at
# align_up(next, 8) = H + 8 + 8 * i and ends at H + 16 + 8 * i; its drop only counts allocations back to 1, so
# next never resets. alloc fails when the end passes heap_end = H + 102400: 16 + 8 * i > 102400, i > 12798.
BUMP_FAILS_AT = 12799  # the 12,800th box of the loop `for i in 0..HEAP_SIZE`


def test_bump_fails_many_boxes_long_lived_where_the_chapter_does(cpu: Cpu) -> None:
    assert 16 + 8 * (BUMP_FAILS_AT - 1) <= HEAP_SIZE < 16 + 8 * BUMP_FAILS_AT
    summary = heap_allocation_tests.many_boxes_long_lived(cpu, allocator="bump")
    assert summary == {
        "test": "many_boxes_long_lived", "n": HEAP_SIZE, "result": "failed",
        "panic": "allocation error: Layout { size: 8, align: 8 }", "iteration": BUMP_FAILS_AT,
    }


def test_bump_passes_the_three_seed_tests_and_fails_the_fourth_in_one_boot(cpu: Cpu) -> None:
    assert heap_allocation_tests.main(cpu, allocator="bump")[-4:] == [
        "many_boxes... [ok]",
        "many_boxes_long_lived... [failed]",
        "",
        "Error: panicked at 'allocation error: Layout { size: 8, align: 8 }'",
    ]


SCRIPT = [
    '{"op":"alloc","id":0,"size":8,"align":8}',
    '{"op":"alloc","id":1,"size":24,"align":8}',
    '{"op":"dealloc","id":0}',
    '{"op":"alloc","id":2,"size":1,"align":1}',
    '{"op":"realloc","id":1,"size":40}',
    '{"op":"alloc","id":3,"size":16,"align":8}',
    '{"op":"dealloc","id":2}',
    '{"op":"alloc","id":4,"size":40,"align":8}',
]
REPLAYED = {  # addresses of ids 0, 1, 2, 1 (realloc), 3, 4, relative to HEAP_START
    # crate: 16, 24 bytes; 2 reuses 0's hole; realloc: 40 at +40, +16 freed (24); 3 (16) would leave 8 of that
    # hole: +80; freeing 2 merges +0 and +16 into 40 bytes: 4 fits exactly at +0
    "lla": [0, 16, 0, 40, 80, 0],
    # next: +8 after 0, +32 after 1, +33 after 2, then align 8: +40..+80, +80..+96, +96
    "bump": [0, 8, 32, 40, 80, 96],
    # as the crate up to 3 (the rest of each split is pushed at the head); but no merging: 4 takes the head,
    # the rest region at +96
    "linked-list": [0, 16, 0, 40, 80, 96],
    # 0: 8-byte block, 16 in the fallback at +0; 1: 32-byte block, 32-aligned at +32 (hole +16..+32); 2: pops 0;
    # realloc: 64-byte block at +64, 1's block goes on the 32 list; 3: 16-byte block from the fallback, exactly
    # the +16 hole; 4: a 64-byte block, the 64 list is empty: fallback at +128
    "fixed-size-block": [0, 32, 0, 64, 16, 128],
}


@pytest.mark.parametrize("allocator", list(ALLOCATORS))
def test_replay_places_every_block_like_the_chapters_code(cpu: Cpu, allocator: str) -> None:
    records = replay(cpu, SCRIPT, allocator=allocator)
    assert [r["id"] for r in records] == [0, 1, 2, 1, 3, 4]
    assert [int(r["addr"], 16) - HEAP_START for r in records] == REPLAYED[allocator]
