"""`cosim.compare`: one workload on every allocator, measured from its trace and its final RAM."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosim.compare import AllocatorComparison, ComparisonError, compare_allocators
from firmware.allocator import ALLOCATORS, Layout


@pytest.fixture(scope="module")
def many_boxes() -> AllocatorComparison:
    return compare_allocators("many_boxes_long_lived", n=50)


def test_every_allocator_is_measured_in_order(many_boxes: AllocatorComparison) -> None:
    assert list(many_boxes.stats) == list(ALLOCATORS)
    for stats in many_boxes.stats.values():
        assert (stats.allocs, stats.deallocs, stats.result) == (51, 51, "ok")
        assert stats.largest_request == Layout(8, 8)


def test_bump_costs_its_eight_memory_operations_and_never_touches_the_heap(many_boxes: AllocatorComparison) -> None:
    bump = many_boxes.stats["bump"]
    # lock load + store, next, heap_end, next store, allocations load + store, unlock
    assert bump.alloc_memory_ops == 8 * 51
    assert bump.heap_pages_by_allocator == 0
    assert bump.heap_pages == 1  # the boxes themselves
    # everything was freed: next is back at heap_start, the whole heap is one free region
    assert (bump.free_bytes, bump.free_regions, bump.fragmented_bytes) == (100 * 1024, 1, 0)


def test_free_state_is_read_from_the_final_ram(many_boxes: AllocatorComparison) -> None:
    # the chapter's list keeps the long-lived box's 16 bytes and one box's 16 bytes as separate regions
    assert many_boxes.stats["linked-list"].free_regions == 3
    assert many_boxes.stats["lla"].free_regions == 1  # the crate merged them


def test_table_and_plot(many_boxes: AllocatorComparison, tmp_path: Path) -> None:
    table = many_boxes.table()
    assert all(name in table for name in ALLOCATORS)
    assert "largest request: Layout { size: 8, align: 8 }" in table
    path = many_boxes.plot(tmp_path / "heap_maps.png")
    assert path.stat().st_size > 10_000


def test_refuses_what_it_cannot_compare() -> None:
    with pytest.raises(ComparisonError, match="Dummy"):
        compare_allocators("demo-dummy")
    with pytest.raises(ComparisonError, match="unknown allocator"):
        compare_allocators("many_boxes", ["slab"], n=1)


def test_bump_failure_is_a_result() -> None:
    comparison = compare_allocators("many_boxes_long_lived", ["bump"])
    assert comparison.stats["bump"].result == "allocation error at iteration 12799"
