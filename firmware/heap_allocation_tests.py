"""The seed's integration tests, `tests/heap_allocation.rs`, and the next chapter's `many_boxes_long_lived`.

Each entry point boots a fresh machine, runs the test kernel's `main` (memory, frame allocator, `init_heap`)
and then one test, and returns a small JSON-able summary. `main` runs them all in one boot, as `test_main`
does, and returns the `cargo test` lines; `every_test` runs them all in one boot and returns every summary. A
failed `assert_eq!` raises `AssertionFailed`.

`n` scales each test: the element count of `large_vec` (1000 in the seed), the iterations of `many_boxes` and
`many_boxes_long_lived` (HEAP_SIZE, 102,400, in the seed), the repetitions of `simple_allocation` (1).
`allocator` names the global allocator static (`firmware.allocator.ALLOCATORS`, default `lla`); an unknown
name raises `UnknownAllocator` before the machine boots.

A test whose allocation fails ends in the seed's `alloc_error_handler` panic, as the Rust test kernel does (the
bump allocator fails `many_boxes_long_lived`: it reuses memory only once every block is freed). That is a
result, not a crash: the entry point returns `"result": "failed"` with the panic message and, in a loop, the
iteration (`i`) whose `Box::new` failed; `main` prints `[failed]` and the `Error:` line and runs no further
test, as `test_panic_handler` exits QEMU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from firmware.allocator import (
    DEFAULT_ALLOCATOR,
    HEAP_SIZE,
    AllocError,
    GlobalAlloc,
    KernelAllocator,
    KernelPanic,
    allocator_class,
)
from firmware.collections import U64, USIZE, Box, Vec
from firmware.cpu import Cpu
from firmware.kernel import init_kernel_heap, start


class AssertionFailed(KernelPanic):
    """`assert_eq!(left, right)` failed in a test kernel."""

    def __init__(self, left: Any, right: Any) -> None:
        super().__init__(f"assertion `left == right` failed\n  left: {left}\n right: {right}")


class AllocErrorInLoop(AllocError):
    """The alloc error handler ran in iteration `iteration` (from 0) of a test's loop."""

    def __init__(self, err: AllocError, iteration: int) -> None:
        super().__init__(err.layout)
        self.iteration = iteration


def assert_eq(left: Any, right: Any) -> None:
    if left != right:
        raise AssertionFailed(left, right)


def _simple_allocation(alloc: GlobalAlloc, n: int) -> dict[str, Any]:
    for _ in range(n):
        heap_value_1 = Box.new_in(41, alloc)
        heap_value_2 = Box.new_in(13, alloc)
        assert_eq(heap_value_1.get(), 41)
        assert_eq(heap_value_2.get(), 13)
        addrs = [f"{heap_value_1.ptr:#x}", f"{heap_value_2.ptr:#x}"]
        heap_value_2.drop()  # locals drop in reverse order of declaration
        heap_value_1.drop()
    return {"boxes": addrs}


def _large_vec(alloc: GlobalAlloc, n: int) -> dict[str, Any]:
    vec = Vec.new_in(alloc, U64)
    for i in range(n):
        vec.push(i)
    total = sum(vec)
    assert_eq(total, (n - 1) * n // 2)
    summary = {"sum": total, "capacity": vec.capacity(), "vec": f"{vec.as_ptr():#x}"}
    vec.drop()
    return summary


def _many_boxes(alloc: GlobalAlloc, n: int) -> dict[str, Any]:
    for i in range(n):
        try:
            x = Box.new_in(i, alloc, USIZE)
        except AllocError as err:
            raise AllocErrorInLoop(err, i) from err
        assert_eq(x.get(), i)
        x.drop()
    return {"boxes": n, "last_box": f"{x.ptr:#x}"}


def _many_boxes_long_lived(alloc: GlobalAlloc, n: int) -> dict[str, Any]:
    long_lived = Box.new_in(1, alloc)
    summary = _many_boxes(alloc, n)
    assert_eq(long_lived.get(), 1)
    summary["long_lived"] = f"{long_lived.ptr:#x}"
    long_lived.drop()
    return summary


TESTS: dict[str, tuple[Callable[[GlobalAlloc, int], dict[str, Any]], int]] = {
    "simple_allocation": (_simple_allocation, 1),
    "large_vec": (_large_vec, 1000),
    "many_boxes": (_many_boxes, HEAP_SIZE),
    "many_boxes_long_lived": (_many_boxes_long_lived, HEAP_SIZE),
}


def failed_test(value: Any) -> str | None:
    """What a test entry point's result reports when its test failed: the panic message, with the iteration where
    it happened in a loop; None for any other value."""
    if not (isinstance(value, dict) and value.get("result") == "failed"):
        return None
    panic = str(value.get("panic"))
    return f"{panic} at iteration {value['iteration']}" if "iteration" in value else panic


def _run(cpu: Cpu, alloc: KernelAllocator, name: str, n: int | None) -> dict[str, Any]:
    body, default_n = TESTS[name]
    n = default_n if n is None else n
    if n < 1:
        raise ValueError(f"{name}: n must be at least 1, got {n}")
    try:
        with cpu.context(name):
            summary = body(alloc, n)
    except AllocError as err:
        failed = {"test": name, "n": n, "result": "failed", "panic": err.seed_panic_message}
        if isinstance(err, AllocErrorInLoop):
            failed["iteration"] = err.iteration
        return failed
    leaked = len(alloc.live_blocks())
    return {"test": name, "n": n, "result": "ok", **summary, "leaked_blocks": leaked}


def _boot_test_kernel(cpu: Cpu, allocator: str) -> KernelAllocator:
    """The test kernel's `main` up to `test_main()`."""
    allocator_class(allocator)  # an unknown name fails before the machine boots
    return init_kernel_heap(cpu, start(cpu), allocator)


def simple_allocation(cpu: Cpu, n: int | None = None, allocator: str = DEFAULT_ALLOCATOR) -> dict[str, Any]:
    return _run(cpu, _boot_test_kernel(cpu, allocator), "simple_allocation", n)


def large_vec(cpu: Cpu, n: int | None = None, allocator: str = DEFAULT_ALLOCATOR) -> dict[str, Any]:
    return _run(cpu, _boot_test_kernel(cpu, allocator), "large_vec", n)


def many_boxes(cpu: Cpu, n: int | None = None, allocator: str = DEFAULT_ALLOCATOR) -> dict[str, Any]:
    return _run(cpu, _boot_test_kernel(cpu, allocator), "many_boxes", n)


def many_boxes_long_lived(cpu: Cpu, n: int | None = None, allocator: str = DEFAULT_ALLOCATOR) -> dict[str, Any]:
    return _run(cpu, _boot_test_kernel(cpu, allocator), "many_boxes_long_lived", n)


def every_test(
    cpu: Cpu, sizes: dict[str, int | None] | None = None, allocator: str = DEFAULT_ALLOCATOR
) -> dict[str, dict[str, Any]]:
    """Every test in one boot, in order, with `n` from `sizes` (by test name; missing: the test's default): each
    one's summary, as its own entry point returns it. Unlike `main`, a failed test does not end the run (its
    blocks stay allocated for the tests after it). One boot instead of four, for the slow simulators."""
    alloc = _boot_test_kernel(cpu, allocator)
    sizes = sizes or {}
    return {name: _run(cpu, alloc, name, sizes.get(name)) for name in TESTS}


def main(cpu: Cpu, n: int | None = None, allocator: str = DEFAULT_ALLOCATOR) -> list[str]:
    """All the tests in one boot, in order, as `cargo test --test heap_allocation` reports them; a failed test
    ends the run with its `Error: panicked at '...'` line."""
    alloc = _boot_test_kernel(cpu, allocator)
    lines = [f"Running {len(TESTS)} tests"]
    for name in TESTS:
        summary = _run(cpu, alloc, name, n)
        if summary["result"] != "ok":
            lines += [f"{name}... [failed]", "", f"Error: panicked at '{summary['panic']}'"]
            break
        lines.append(f"{name}... [ok]")
    for line in lines:
        print(line)
    return lines
