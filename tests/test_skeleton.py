"""The walking skeleton: with paging off, every backend stores and loads every access size identically."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import require_simulator

from cosim.backends import BACKENDS, HDL_BACKENDS
from cosim.program import RunResult
from cosim.runner import run_program
from hdl.protocol import MmuConfig

ROUNDTRIP = "firmware.skeleton:memory_roundtrip"


@pytest.fixture(scope="session")
def roundtrip() -> Callable[[str], RunResult]:
    """The traced memory_roundtrip run of a backend, run once per session and backend."""
    runs: dict[str, RunResult] = {}

    def run(backend: str) -> RunResult:
        require_simulator(backend)
        if backend not in runs:
            runs[backend] = run_program(ROUNDTRIP, backend, trace=True)
        return runs[backend]

    return run


def expected_roundtrip(config: MmuConfig) -> dict[str, int]:
    """What memory_roundtrip must see, worked out from little-endian byte order rather than from any backend."""
    assembled = int.from_bytes(bytes([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]), "little")
    patched = int.from_bytes(bytes([0x11, 0x22, 0x33, 0x44, 0x55, 0xAA, 0x77, 0x88]), "little")
    return {
        "u64": 0x0123_4567_89AB_CDEF,
        "u32": 0xDEAD_BEEF,
        "u16": 0xCAFE,
        "u8": 0x5A,
        "assembled": assembled,
        "patched": patched,
        "patched_low_u32": patched & 0xFFFF_FFFF,
        "patched_high_u32": patched >> 32,
        "patched_u16_at_4": (patched >> 32) & 0xFFFF,
        "patched_u8_at_5": 0xAA,
        "string": int.from_bytes(b"walking skeleton", "little"),
        "mem_bytes": config.mem_bytes,
        "last_word": 0x7E57_0F_7A11,
    }


@pytest.mark.rtl
@pytest.mark.parametrize("backend", BACKENDS)
def test_sub_word_stores_and_loads_of_every_size_read_back_little_endian(
    backend: str, roundtrip: Callable[[str], RunResult]
) -> None:
    result = roundtrip(backend)
    assert result.value == expected_roundtrip(MmuConfig())
    assert result.backend == backend
    assert result.ops == len(result.events) > 0


@pytest.mark.rtl
@pytest.mark.parametrize("backend", BACKENDS)
def test_paging_off_access_events_record_the_identity_translation(
    backend: str, roundtrip: Callable[[str], RunResult]
) -> None:
    events = roundtrip(backend).events
    assert [e.seq for e in events] == list(range(len(events)))
    memory = [e for e in events if e.size]
    assert memory and all(e.paddr == e.vaddr and not e.tlb_hit and not e.tlb_miss for e in memory)
    assert all(e.fault == 0 and e.walk_levels == 0 for e in events)


@pytest.mark.rtl
@pytest.mark.parametrize("backend", [b for b in HDL_BACKENDS if b != "verilator"])
def test_rtl_backends_agree_with_verilator_event_for_event(backend: str, roundtrip: Callable[[str], RunResult]) -> None:
    assert roundtrip(backend).events == roundtrip("verilator").events
