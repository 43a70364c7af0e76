"""Replay an allocation script through the kernel's global allocator, and generate random scripts.

A script is JSON lines, one operation each:
    {"op":"alloc","id":N,"size":S,"align":A}   {"op":"dealloc","id":N}   {"op":"realloc","id":N,"size":S}
`replay` boots the machine, runs `init_heap`, then feeds every operation to the global allocator static
(`allocator`, a name in `firmware.allocator.ALLOCATORS`; the seed's `LockedHeap`, `lla`, by default) through
`GlobalAlloc` (`alloc`, `dealloc`, `realloc` with Rust's default realloc: alloc, copy, dealloc) and returns one
record per alloc and realloc, in order: {"id":N,"addr":"0x…"}, or {"id":N,"addr":null} when the heap cannot
serve it.

Rules: an id is allocated once and names its block until it is deallocated; a realloc keeps the id (and the
block's alignment). When an alloc fails, later deallocs of its id are skipped and reallocs of it yield null. A
realloc that fails leaves the old block allocated under the id, as Rust's `realloc` does.

The whole script is checked before anything runs: a malformed line (bad JSON, unknown op, missing, extra or
negative field, bad align, unknown or reused id) raises `ReplayError` naming its line number (1-based; blank
lines are skipped but counted).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import Any, NamedTuple

from firmware.allocator import DEFAULT_ALLOCATOR, Layout, LayoutError, allocator_class
from firmware.cpu import Cpu
from firmware.kernel import init_kernel_heap, start

FIELDS = {"alloc": ("id", "size", "align"), "dealloc": ("id",), "realloc": ("id", "size")}


class ReplayError(ValueError):
    """A line of an allocation script is malformed."""

    def __init__(self, line_no: int, message: str) -> None:
        super().__init__(f"line {line_no}: {message}")
        self.line_no = line_no


class Operation(NamedTuple):
    line_no: int
    op: str
    id: int
    layout: Layout | None  # alloc: its layout; realloc: the new size with the block's alignment


def parse(lines: Iterable[str]) -> list[Operation]:
    """Check a whole script and return its operations; raises ReplayError at the first malformed line."""
    operations = []
    layouts: dict[int, Layout] = {}  # live ids and the layout of their block
    freed: set[int] = set()
    for line_no, text in enumerate(lines, 1):
        if not text.strip():
            continue
        record = _record(line_no, text)
        op, ident = record["op"], record["id"]
        if op == "alloc":
            if ident in layouts or ident in freed:
                raise ReplayError(line_no, f"id {ident} is reused (ids name one allocation each)")
            layout = _layout(line_no, record["size"], record["align"])
            layouts[ident] = layout
        else:
            if ident not in layouts:
                state = "was already deallocated" if ident in freed else "was never allocated"
                raise ReplayError(line_no, f"{op} of id {ident}, which {state}")
            if op == "dealloc":
                layout = None
                freed.add(ident)
                del layouts[ident]
            else:
                layout = layouts[ident] = _layout(line_no, record["size"], layouts[ident].align)
        operations.append(Operation(line_no, op, ident, layout))
    return operations


def _record(line_no: int, text: str) -> dict[str, Any]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise ReplayError(line_no, f"not JSON: {err.msg} at column {err.colno}") from None
    except ValueError as err:  # an integer of thousands of digits: Python refuses to convert it
        raise ReplayError(line_no, f"not a usable number: {err}") from None
    if not isinstance(record, dict):
        raise ReplayError(line_no, "expected a JSON object")
    op = record.get("op")
    if op not in FIELDS:
        raise ReplayError(line_no, f"unknown op {op!r}; expected one of {', '.join(FIELDS)}")
    expected = {"op", *FIELDS[op]}
    missing = sorted(expected - record.keys())
    if missing:
        raise ReplayError(line_no, f"{op} is missing field {missing[0]!r}")
    extra = sorted(record.keys() - expected)
    if extra:
        raise ReplayError(line_no, f"{op} has unexpected field {extra[0]!r}")
    for name in FIELDS[op]:
        value = record[name]
        if type(value) is not int or value < 0:
            raise ReplayError(line_no, f"{name} must be a non-negative integer, got {value!r}")
    return record


def _layout(line_no: int, size: int, align: int) -> Layout:
    if size == 0:
        raise ReplayError(line_no, "size must be at least 1: GlobalAlloc's alloc and realloc are undefined for "
                                   "zero-sized layouts")
    try:
        return Layout.from_size_align(size, align)
    except LayoutError as err:
        raise ReplayError(line_no, str(err)) from None


def replay(cpu: Cpu, lines: Iterable[str], allocator: str = DEFAULT_ALLOCATOR) -> list[dict[str, Any]]:
    """Boot, initialise the heap, run the script through the global allocator named `allocator`; one record per
    alloc and realloc. A malformed script (ReplayError) or an unknown allocator (UnknownAllocator) is refused
    before the machine boots."""
    operations = parse(lines)
    allocator_class(allocator)
    alloc = init_kernel_heap(cpu, start(cpu), allocator)
    blocks: dict[int, tuple[int, Layout]] = {}  # id -> (address or 0 when its alloc failed, layout)
    results: list[dict[str, Any]] = []
    with cpu.context("replay"):
        for _, op, ident, layout in operations:
            if op == "alloc":
                assert layout is not None
                ptr = alloc.alloc(layout)
                blocks[ident] = (ptr, layout)
                results.append({"id": ident, "addr": f"{ptr:#x}" if ptr else None})
            elif op == "dealloc":
                ptr, old = blocks.pop(ident)
                if ptr:
                    alloc.dealloc(ptr, old)
            else:
                assert layout is not None
                ptr, old = blocks[ident]
                new_ptr = alloc.realloc(ptr, old, layout.size) if ptr else 0
                if new_ptr:
                    blocks[ident] = (new_ptr, layout)
                results.append({"id": ident, "addr": f"{new_ptr:#x}" if new_ptr else None})
    return results


SMALL_SIZES = (1, 2, 4, 8, 12, 16, 24, 32, 40, 48, 64, 100, 128)
ALIGNS = (1, 2, 4, 8, 8, 8, 8, 16, 32, 64)


def _random_size(rng: random.Random) -> int:
    """Mostly small objects, some buffers, a few large ones (up to 16 KiB of the 100 KiB heap)."""
    draw = rng.random()
    if draw < 0.7:
        return rng.choice(SMALL_SIZES)
    if draw < 0.95:
        return rng.randint(129, 2048)
    return rng.randint(2049, 16384)


def generate(n_ops: int, seed: int) -> list[str]:
    """A random but valid script of `n_ops` operations: about half allocs, a third deallocs of a random live
    block, the rest reallocs; the same `seed` gives the same script."""
    if n_ops < 0:
        raise ValueError(f"n_ops must be non-negative, got {n_ops}")
    rng = random.Random(seed)
    live: list[int] = []
    next_id = 0
    lines = []
    for _ in range(n_ops):
        draw = rng.random()
        if not live or draw < 0.5:
            record: dict[str, Any] = {"op": "alloc", "id": next_id, "size": _random_size(rng),
                                      "align": rng.choice(ALIGNS)}
            live.append(next_id)
            next_id += 1
        elif draw < 0.85:
            ident = live.pop(rng.randrange(len(live)))
            record = {"op": "dealloc", "id": ident}
        else:
            record = {"op": "realloc", "id": rng.choice(live), "size": _random_size(rng)}
        lines.append(json.dumps(record, separators=(",", ":")))
    return lines
