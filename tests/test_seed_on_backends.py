"""The seed's integration tests (tests/heap_allocation.rs) on every RTL backend, checked against `reference`.

`make test` runs them at the seed's sizes where they are small (simple_allocation, large_vec with n = 1000) and
reduced where they are long (many_boxes, many_boxes_long_lived); `make test-full` runs the full HEAP_SIZE
iterations on the backends fast enough for 2.9 million operations.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from conftest import require_simulator

from cosim.runner import run_program

RTL_BACKENDS = ["myhdl", "verilator", "cocotb-verilator", "cocotb-icarus"]
REDUCED = {"simple_allocation": None, "large_vec": None, "many_boxes": 300, "many_boxes_long_lived": 300}


@cache
def on_reference(test: str, n: int | None) -> Any:
    return run_program(f"firmware.heap_allocation_tests:{test}", "reference", args={"n": n}).value


def run_seed_test(test: str, backend: str, n: int | None) -> Any:
    require_simulator(backend)
    return run_program(f"firmware.heap_allocation_tests:{test}", backend, args={"n": n}).value


@pytest.mark.rtl
@pytest.mark.parametrize("backend", RTL_BACKENDS)
@pytest.mark.parametrize("test", list(REDUCED))
def test_seed_test_passes_on_rtl_exactly_as_on_reference(test: str, backend: str) -> None:
    """Same placements, same sums, nothing leaked: the summary each test returns is identical to reference's."""
    summary = run_seed_test(test, backend, REDUCED[test])
    assert summary == on_reference(test, REDUCED[test])
    assert summary["leaked_blocks"] == 0


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["verilator", "cocotb-verilator", "cocotb-icarus"])
@pytest.mark.parametrize("test", ["many_boxes", "many_boxes_long_lived"])
def test_seed_test_at_full_size_on_rtl(test: str, backend: str) -> None:
    summary = run_seed_test(test, backend, None)
    assert summary == on_reference(test, None)
    assert summary["boxes"] == 100 * 1024
