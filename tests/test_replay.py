"""Allocation scripts: validation with line numbers, replay placements through the global LockedHeap, the
null results of failed allocations, and the seeded generator."""

from __future__ import annotations

import json

import pytest

from cosim.backends import open_backend
from firmware.allocator import HEAP_SIZE, HEAP_START
from firmware.cpu import Cpu
from firmware.replay import ReplayError, generate, parse, replay


@pytest.fixture
def cpu() -> Cpu:
    return Cpu(open_backend("reference"))


def alloc(ident: int, size: int, align: int = 8) -> str:
    return json.dumps({"op": "alloc", "id": ident, "size": size, "align": align})


def dealloc(ident: int) -> str:
    return json.dumps({"op": "dealloc", "id": ident})


def realloc(ident: int, size: int) -> str:
    return json.dumps({"op": "realloc", "id": ident, "size": size})


def addr(offset: int) -> str:
    return f"{HEAP_START + offset:#x}"


def test_replay_places_like_the_linked_list_allocator(cpu: Cpu) -> None:
    script = [
        alloc(0, 16), alloc(1, 100),  # 0 at the bottom, 1 after it (104 bytes: 0x10..0x78)
        dealloc(0), alloc(2, 8),  # 2 reuses 0's block
        realloc(1, 200),  # the new block is allocated while 1 still holds 0x10..0x78: at 0x78
        alloc(3, 50, 16),  # the old block of 1 is free again: 56 bytes fit at 0x10
    ]
    assert replay(cpu, script) == [
        {"id": 0, "addr": addr(0)}, {"id": 1, "addr": addr(0x10)}, {"id": 2, "addr": addr(0)},
        {"id": 1, "addr": addr(0x78)}, {"id": 3, "addr": addr(0x10)},
    ]


def test_failed_alloc_gives_null_and_its_id_is_skipped_later(cpu: Cpu) -> None:
    script = [alloc(0, HEAP_SIZE + 1), realloc(0, 16), dealloc(0), alloc(1, 16)]
    assert replay(cpu, script) == [
        {"id": 0, "addr": None}, {"id": 0, "addr": None}, {"id": 1, "addr": addr(0)},
    ]


def test_failed_realloc_keeps_the_old_block(cpu: Cpu) -> None:
    script = [alloc(0, 16), realloc(0, HEAP_SIZE), alloc(1, 16), dealloc(0), alloc(2, 16)]
    assert replay(cpu, script) == [
        {"id": 0, "addr": addr(0)}, {"id": 0, "addr": None},
        {"id": 1, "addr": addr(0x10)},  # id 0 still holds the bottom block
        {"id": 2, "addr": addr(0)},  # freed by the dealloc of id 0
    ]


@pytest.mark.parametrize(("lines", "line_no", "message"), [
    (["{nope"], 1, "not JSON"),
    (["[1, 2]"], 1, "expected a JSON object"),
    (['{"op": "free", "id": 0}'], 1, "unknown op 'free'"),
    (['{"op": "alloc", "id": 0, "size": 8}'], 1, "missing field 'align'"),
    (['{"op": "dealloc", "id": 0, "size": 8}'], 1, "unexpected field 'size'"),
    ([alloc(0, -8)], 1, "size must be a non-negative integer"),
    (['{"op": "alloc", "id": true, "size": 8, "align": 8}'], 1, "id must be a non-negative integer"),
    ([alloc(0, 8, 3)], 1, "align must be a power of two"),
    ([alloc(0, 8, 0)], 1, "align must be a power of two"),
    ([alloc(0, 8), alloc(0, 8)], 2, "id 0 is reused"),
    ([alloc(0, 8), dealloc(0), alloc(0, 8)], 3, "id 0 is reused"),
    ([dealloc(4)], 1, "dealloc of id 4, which was never allocated"),
    ([alloc(0, 8), dealloc(0), dealloc(0)], 3, "which was already deallocated"),
    ([alloc(0, 8), dealloc(0), realloc(0, 8)], 3, "realloc of id 0, which was already deallocated"),
    ([alloc(0, 8), "", "  ", "oops"], 4, "not JSON"),
])
def test_malformed_lines_are_reported_with_their_number(lines: list[str], line_no: int, message: str) -> None:
    with pytest.raises(ReplayError, match=message) as caught:
        parse(lines)
    assert caught.value.line_no == line_no
    assert str(caught.value).startswith(f"line {line_no}: ")


def test_a_malformed_script_runs_nothing(cpu: Cpu) -> None:
    with pytest.raises(ReplayError):
        replay(cpu, [alloc(0, 8), "{"])
    assert cpu.ops == 0


def test_generate_is_seeded_and_valid() -> None:
    script = generate(500, seed=7)
    assert script == generate(500, seed=7)
    assert script != generate(500, seed=8)
    operations = parse(script)
    assert len(operations) == 500
    assert {op.op for op in operations} == {"alloc", "dealloc", "realloc"}


def test_generated_script_replays(cpu: Cpu) -> None:
    script = generate(400, seed=1)
    results = replay(cpu, script)
    expected = sum(json.loads(line)["op"] in ("alloc", "realloc") for line in script)
    assert len(results) == expected
    assert all(r["addr"] is None or int(r["addr"], 16) >= HEAP_START for r in results)
