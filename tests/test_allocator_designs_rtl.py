"""The chapter's allocators on the RTL backends: reduced seed tests give the same summaries, addresses included,
as on `reference`, and bump's many_boxes_long_lived fails at the same iteration on Verilator."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from cosim.runner import run_program

DESIGNS = ["bump", "linked-list", "fixed-size-block"]


@cache
def on_reference(test: str, n: int | None, allocator: str) -> Any:
    return run_program(f"firmware.heap_allocation_tests:{test}", "reference",
                       args={"n": n, "allocator": allocator}).value


def run(test: str, backend: str, n: int | None, allocator: str) -> Any:
    return run_program(f"firmware.heap_allocation_tests:{test}", backend, args={"n": n, "allocator": allocator}).value


@pytest.mark.rtl
@pytest.mark.parametrize("allocator", DESIGNS)
@pytest.mark.parametrize(("test", "n"), [("simple_allocation", None), ("large_vec", 100),
                                         ("many_boxes_long_lived", 100)])
def test_design_on_verilator_exactly_as_on_reference(test: str, n: int | None, allocator: str) -> None:
    summary = run(test, "verilator", n, allocator)
    assert summary == on_reference(test, n, allocator)
    assert summary["result"] == "ok"


@pytest.mark.rtl
@pytest.mark.parametrize("allocator", DESIGNS)
def test_design_on_myhdl_exactly_as_on_reference(allocator: str) -> None:
    summary = run("many_boxes_long_lived", "myhdl", 3, allocator)
    assert summary == on_reference("many_boxes_long_lived", 3, allocator)


@pytest.mark.rtl
def test_bump_fails_many_boxes_long_lived_on_verilator() -> None:
    summary = run("many_boxes_long_lived", "verilator", None, "bump")
    assert (summary["result"], summary["iteration"]) == ("failed", 12799)
