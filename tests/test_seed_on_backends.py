"""The seed's integration tests (tests/heap_allocation.rs) on every RTL backend and every global allocator, checked
against `reference`.

`make test` runs them at the seed's sizes where they are small (simple_allocation, large_vec with n = 1000) and
reduced where they are long (many_boxes, many_boxes_long_lived); `make test-full` runs the full HEAP_SIZE
iterations on the backends fast enough for 2.9 million operations. The seed's `lla` runs each test in its own
boot; the next chapter's designs (bump, linked-list, fixed-size-block) run all four in one boot
(`every_test`, so the later tests meet the heap the earlier ones left), which keeps the slow simulators to one
boot per allocator; each test in its own boot on every allocator is in test_allocator_designs.py (reference).
Bump's expected failure needs the full size (it runs out at box 12,799, 200,000 operations): `make test` checks
it on reference and verilator, `make test-full` on every backend.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from conftest import require_simulator

from cosim.runner import run_program
from firmware.allocator import ALLOCATORS, DEFAULT_ALLOCATOR

RTL_BACKENDS = ["myhdl", "verilator", "cocotb-verilator", "cocotb-icarus"]
REDUCED = {"simple_allocation": None, "large_vec": None, "many_boxes": 300, "many_boxes_long_lived": 300}
DESIGNS = [name for name in ALLOCATORS if name != DEFAULT_ALLOCATOR]  # the "Allocator Designs" chapter's
DESIGN_SIZES = {**REDUCED, "large_vec": 300}  # one boot runs all four: myhdl takes ~15 s per allocator
BUMP_RUNS_OUT = {"test": "many_boxes_long_lived", "n": 100 * 1024, "result": "failed",
                 "panic": "allocation error: Layout { size: 8, align: 8 }", "iteration": 12799}
slow = pytest.mark.slow


@cache
def on_reference(test: str, n: int | None, allocator: str = DEFAULT_ALLOCATOR) -> Any:
    args = {"n": n, "allocator": allocator}
    return run_program(f"firmware.heap_allocation_tests:{test}", "reference", args=args).value


def run_seed_test(test: str, backend: str, n: int | None, allocator: str = DEFAULT_ALLOCATOR) -> Any:
    require_simulator(backend)
    args = {"n": n, "allocator": allocator}
    return run_program(f"firmware.heap_allocation_tests:{test}", backend, args=args).value


@cache
def every_test(backend: str, allocator: str) -> dict[str, Any]:
    if backend != "reference":
        require_simulator(backend)
    args = {"sizes": DESIGN_SIZES, "allocator": allocator}
    return run_program("firmware.heap_allocation_tests:every_test", backend, args=args).value


@pytest.mark.rtl
@pytest.mark.parametrize("backend", RTL_BACKENDS)
@pytest.mark.parametrize("test", list(REDUCED))
def test_seed_test_passes_on_rtl_exactly_as_on_reference(test: str, backend: str) -> None:
    """Same placements, same sums, nothing leaked: the summary each test returns is identical to reference's."""
    summary = run_seed_test(test, backend, REDUCED[test])
    assert summary == on_reference(test, REDUCED[test])
    assert summary["leaked_blocks"] == 0


@pytest.mark.rtl
@pytest.mark.parametrize("backend", RTL_BACKENDS)
@pytest.mark.parametrize("allocator", DESIGNS)
def test_seed_tests_pass_on_every_allocator_exactly_as_on_reference(allocator: str, backend: str) -> None:
    summaries = every_test(backend, allocator)
    assert summaries == every_test("reference", allocator)
    assert list(summaries) == list(DESIGN_SIZES)
    for summary in summaries.values():
        assert (summary["result"], summary["leaked_blocks"]) == ("ok", 0)


@pytest.mark.parametrize("backend", [
    "reference",
    pytest.param("verilator", marks=pytest.mark.rtl),
    pytest.param("cocotb-verilator", marks=[pytest.mark.rtl, slow]),  # 200,000 operations: 5-15 s
    pytest.param("cocotb-icarus", marks=[pytest.mark.rtl, slow]),  # 10-30 s
    pytest.param("myhdl", marks=[pytest.mark.rtl, slow]),  # about a minute
])
def test_bump_runs_out_in_many_boxes_long_lived_at_box_12799(backend: str) -> None:
    """The chapter's expected failure, at the iteration the Rust code fails: (16 + 8 i > 102,400) at i = 12,799."""
    summary = run_seed_test("many_boxes_long_lived", backend, None, "bump")
    assert summary == BUMP_RUNS_OUT


FULL_SIZE = [
    *[(DEFAULT_ALLOCATOR, backend) for backend in ("verilator", "cocotb-verilator", "cocotb-icarus")],
    *[(allocator, backend) for allocator in DESIGNS for backend in ("verilator", "cocotb-verilator")],
]


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize(("allocator", "backend"), FULL_SIZE)
@pytest.mark.parametrize("test", ["many_boxes", "many_boxes_long_lived"])
def test_seed_test_at_full_size_on_rtl(test: str, allocator: str, backend: str) -> None:
    summary = run_seed_test(test, backend, None, allocator)
    assert summary == on_reference(test, None, allocator)
    if (allocator, test) != ("bump", "many_boxes_long_lived"):  # that one runs out (above)
        assert summary["boxes"] == 100 * 1024
