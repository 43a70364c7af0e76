"""`cosim.analysis.heap`: the free regions of any global allocator, read back from a trace's RAM."""

from __future__ import annotations

import pytest

from cosim.analysis.heap import heap_states
from cosim.runner import run_program
from firmware.allocator import HEAP_SIZE, HEAP_START

H = HEAP_START


def _states(program: str, allocator: str | None):
    args = {} if allocator is None else {"allocator": allocator}
    run = run_program(program, "reference", args=args, trace=True)
    return heap_states(run.events, run.contexts, allocator or "lla")


@pytest.mark.parametrize(("allocator", "after_first_box"), [
    ("lla", [(H + 16, HEAP_SIZE - 16)]),  # the crate's 16-byte minimum block
    ("bump", [(H + 4, HEAP_SIZE - 4)]),  # [next, heap_end)
    ("linked-list", [(H + 16, HEAP_SIZE - 16)]),  # a ListNode's 16 bytes at least
    ("fixed-size-block", [(H + 16, HEAP_SIZE - 16)]),  # an 8-byte block, 16 in the fallback; its list is empty
])
def test_each_allocator_reads_its_own_free_regions(allocator, after_first_box):
    states = _states("firmware.heap_allocation_tests:simple_allocation", allocator)
    assert len(states.seqs) == len(states.snapshots) == 4  # two allocs, two deallocs
    assert states.snapshots[0] == after_first_box
    assert states.final.free_regions() == states.snapshots[-1]


def test_bump_gets_its_whole_heap_back_only_when_everything_is_freed():
    snapshots = _states("firmware.heap_allocation_tests:simple_allocation", "bump").snapshots
    assert snapshots[2] == [(H + 8, HEAP_SIZE - 8)]  # one box freed: nothing comes back
    assert snapshots[3] == [(H, HEAP_SIZE)]


def test_a_kernel_without_a_heap_has_no_heap_states():
    assert _states("firmware.kernel:demo_dummy", None).seqs == []
