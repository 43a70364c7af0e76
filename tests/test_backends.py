"""The backends as the runner sees them: faults as results, events, build caches, waves, and bad input."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import cocotb_tools.runner
import pytest
from conftest import require_simulator

import cosim.backends.cocotb_sim
import cosim.toolchain.build
import cosim.toolchain.export
from cosim.backends import BACKENDS, HDL_BACKENDS, BackendError, open_backend
from cosim.program import ProgramError, RunResult, Span
from cosim.runner import run_program
from firmware.cpu import AlignmentCheck
from firmware.skeleton import SCRATCH, KernelPanic
from hdl.protocol import TIMING_FIELDS, Csr, Fault, MmuConfig, Op, Pte

COCOTB_BACKENDS = [b for b in BACKENDS if b.startswith("cocotb-")]


@pytest.fixture(scope="session")
def traced() -> Callable[[str, str], RunResult]:
    """The traced run of a program on a backend, run once per session."""
    runs: dict[tuple[str, str], RunResult] = {}

    def run(program: str, backend: str) -> RunResult:
        require_simulator(backend)
        if (program, backend) not in runs:
            runs[program, backend] = run_program(f"firmware.skeleton:{program}", backend, trace=True)
        return runs[program, backend]

    return run


# -- faults and firmware errors are results, identical everywhere ----------------------------------------------


@pytest.mark.rtl
@pytest.mark.parametrize("backend", BACKENDS)
def test_caught_align_bus_and_gp_faults_are_identical_on_every_backend(
    backend: str, traced: Callable[[str, str], RunResult]
) -> None:
    mem_bytes = MmuConfig().mem_bytes
    assert traced("caught_faults", backend).value == [
        ("AlignmentCheck", SCRATCH + 2),
        ("BusError", mem_bytes),
        ("GeneralProtection", 0x7FF),
        ("GeneralProtection", int(Csr.CFG_MEM_BYTES)),
    ]


@pytest.mark.rtl
@pytest.mark.parametrize("backend", BACKENDS)
def test_fault_escaping_the_program_becomes_the_run_result(backend: str) -> None:
    require_simulator(backend)
    result = run_program("firmware.skeleton:misaligned_load", backend)
    assert isinstance(result.value, AlignmentCheck)
    assert result.fault is result.value
    assert result.value.addr == SCRATCH + 2
    assert str(result.value) == str(AlignmentCheck(SCRATCH + 2))
    assert result.ops == 1


@pytest.mark.rtl
@pytest.mark.parametrize("backend", ["reference", *COCOTB_BACKENDS])
def test_firmware_exception_reaches_the_caller_with_its_type_and_attributes(backend: str) -> None:
    require_simulator(backend)
    with pytest.raises(KernelPanic, match="deliberate") as raised:
        run_program("firmware.skeleton:panics", backend)
    assert raised.value.code == 7


@pytest.mark.rtl
@pytest.mark.parametrize("backend", [b for b in HDL_BACKENDS if b != "verilator"])
def test_fault_events_are_identical_between_rtl_backends(
    backend: str, traced: Callable[[str, str], RunResult]
) -> None:
    events = traced("caught_faults", backend).events
    assert [e.fault for e in events if e.fault] == [3, 4, 2, 2]  # ALIGN, BUS, GP, GP
    assert events == traced("caught_faults", "verilator").events


@pytest.mark.rtl
@pytest.mark.parametrize("backend", BACKENDS)
def test_one_mapped_page_walks_hits_faults_and_sets_accessed_and_dirty(
    backend: str, traced: Callable[[str, str], RunResult]
) -> None:
    page, frame = 0x7F12_3456_7000, 0x14000
    assert traced("one_mapped_page", backend).value == {
        "first_load": 0xF00D,
        "hit_load": 0xBEEF,
        "fault_error_code": 0,  # not present, a read, in supervisor mode
        "cr2": page + 0x1000,
        "after_invlpg": 0xF00D,
        "pt_entry": frame | Pte.PRESENT | Pte.WRITABLE | Pte.ACCESSED | Pte.DIRTY,
        "stored_physically": 0xBEEF,
    }


@pytest.mark.rtl
@pytest.mark.parametrize("backend", [b for b in HDL_BACKENDS if b != "verilator"])
def test_translation_events_are_identical_between_rtl_backends(
    backend: str, traced: Callable[[str, str], RunResult]
) -> None:
    events = traced("one_mapped_page", backend).events
    assert any(e.tlb_hit for e in events) and any(e.walk_levels == 4 for e in events)
    assert events == traced("one_mapped_page", "verilator").events


@pytest.mark.rtl
def test_rtl_events_match_the_reference_model_apart_from_timing(traced: Callable[[str, str], RunResult]) -> None:
    untimed = {field: 0 for field in TIMING_FIELDS}
    for program in ("memory_roundtrip", "caught_faults", "one_mapped_page"):
        rtl = [e._replace(**untimed) for e in traced(program, "verilator").events]
        model = [e._replace(**untimed) for e in traced(program, "reference").events]
        assert rtl == model


@pytest.mark.rtl
@pytest.mark.parametrize("backend", ["reference", "cocotb-icarus"])
def test_nested_contexts_come_back_as_spans_over_operation_numbers(backend: str) -> None:
    require_simulator(backend)
    result = run_program("firmware.skeleton:nested_contexts", backend, trace=True)
    assert result.value == 3
    # outer: store (0), inner: store (1), then two loads (2, 3); end_seq is exclusive
    assert result.contexts == [Span("outer", 0, 0, 4), Span("inner", 1, 1, 2)]


@pytest.mark.rtl
def test_slow_memory_stretches_operations_alike_on_myhdl_and_icarus() -> None:
    require_simulator("cocotb-icarus")
    slow = MmuConfig(mem_latency=3)
    runs = [run_program("firmware.skeleton:one_mapped_page", b, slow, trace=True) for b in ("myhdl", "cocotb-icarus")]
    assert runs[0].events == runs[1].events
    fast = run_program("firmware.skeleton:one_mapped_page", "cocotb-icarus", trace=True)
    assert runs[0].value == fast.value
    assert runs[0].events[-1].cycle > fast.events[-1].cycle


# -- builds are cached --------------------------------------------------------------------------------------------


def _forbid(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
    def rebuild(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{name} ran although nothing changed")

    monkeypatch.setattr(owner, name, rebuild)


@pytest.mark.rtl
def test_second_verilator_open_reuses_the_built_library(monkeypatch: pytest.MonkeyPatch) -> None:
    config = MmuConfig()
    with open_backend("verilator", config) as first:
        library = first.library_path
    _forbid(monkeypatch, cosim.toolchain.export, "convert_text")
    _forbid(monkeypatch, cosim.toolchain.build, "run_tool")
    with open_backend("verilator", config) as second:
        assert second.library_path == library
        assert second.transact(0, SCRATCH, 3) == (0, 0, 0)


@pytest.mark.rtl
@pytest.mark.parametrize("backend", COCOTB_BACKENDS)
def test_second_cocotb_build_reuses_the_built_simulation(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    require_simulator(backend)
    simulator = cosim.backends.cocotb_sim.SIMULATORS[backend]
    build_dir = cosim.backends.cocotb_sim.build_simulation(simulator, MmuConfig())
    _forbid(monkeypatch, cosim.toolchain.export, "convert_text")
    _forbid(monkeypatch, cocotb_tools.runner, "get_runner")
    assert cosim.backends.cocotb_sim.build_simulation(simulator, MmuConfig()) == build_dir


# -- waves ----------------------------------------------------------------------------------------------------------

WAVES_CASES = [
    ("myhdl", "run.vcd"),
    ("verilator", "run.vcd"),
    ("cocotb-icarus", "run.fst"),
    ("cocotb-icarus", "run.vcd"),
    pytest.param("cocotb-verilator", "run.vcd", marks=pytest.mark.slow),
]


@pytest.mark.rtl
@pytest.mark.parametrize(("backend", "name"), WAVES_CASES)
def test_waves_file_is_written_where_asked(backend: str, name: str, tmp_path: Path) -> None:
    require_simulator(backend)
    waves = tmp_path / "waves" / name
    result = run_program("firmware.skeleton:memory_roundtrip", backend, waves=waves)
    assert result.value["u64"] == 0x0123_4567_89AB_CDEF
    assert waves.stat().st_size > 0
    if waves.suffix == ".vcd":
        text = waves.read_text()
        assert "$enddefinitions" in text and "req_valid" in text


@pytest.mark.parametrize(
    ("backend", "name"), [("myhdl", "run.fst"), ("verilator", "run.ghw"), ("cocotb-icarus", "run.lxt")]
)
def test_waves_file_of_a_format_the_simulator_cannot_write_is_refused(backend: str, name: str, tmp_path: Path) -> None:
    require_simulator(backend)
    with pytest.raises(BackendError, match="waves"):
        run_program("firmware.skeleton:memory_roundtrip", backend, waves=tmp_path / name)


# -- one MyHDL simulation per process, bad input --------------------------------------------------------------------


@pytest.mark.rtl
def test_second_open_myhdl_backend_is_refused_until_the_first_closes() -> None:
    with open_backend("myhdl") as first:
        with pytest.raises(BackendError, match="one simulation"):
            open_backend("myhdl")
        assert first.transact(Op.CSR_READ, Csr.CFG_MEM_BYTES) == (MmuConfig().mem_bytes, 0, 0)
    with contextlib.closing(open_backend("myhdl")) as again:
        assert again.transact(Op.CSR_READ, Csr.CFG_MEM_BYTES)[1] == 0


def test_myhdl_simulates_64_mib_of_ram_up_to_its_last_word() -> None:
    """The simulation-only RAM holds only the words written, so the largest RAM costs nothing to build."""
    top = (64 << 20) - 8
    with open_backend("myhdl", MmuConfig(mem_bytes=64 << 20)) as sim:
        assert sim.transact(Op.STORE, top, 3, 0x0123_4567_89AB_CDEF) == (0, Fault.NONE, 0)
        assert sim.transact(Op.LOAD, top, 3) == (0x0123_4567_89AB_CDEF, Fault.NONE, 0)
        assert sim.transact(Op.LOAD, top + 8, 3)[1] == Fault.BUS


@pytest.mark.parametrize(
    "program",
    ["memory_roundtrip", "firmware.skeleton", "cosim.no_such_module:run", "firmware.skeleton:no_such_function"],
)
def test_program_that_names_no_function_is_a_program_error(program: str) -> None:
    with pytest.raises(ProgramError):
        run_program(program, "reference")


def test_unknown_backend_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="unknown backend"):
        run_program("firmware.skeleton:memory_roundtrip", "modelsim")


# -- large memories -------------------------------------------------------------------------------------------------


@pytest.mark.rtl
@pytest.mark.slow
def test_verilator_runs_a_64_mib_memory_to_its_last_word() -> None:
    config = MmuConfig(mem_bytes=64 << 20)
    result = run_program("firmware.skeleton:memory_roundtrip", "verilator", config)
    assert result.value["mem_bytes"] == 64 << 20
    assert result.value["last_word"] == 0x7E57_0F_7A11


def test_simulation_ram_answers_every_cycle_as_the_synthesizable_ram_does() -> None:
    """hdl.sim_ram replaces hdl.ram on the myhdl backend: the same random port activity (writes of random byte lanes,
    which keep `rdata`, and cycles with no lane enabled, which read) on both, side by side, gives the same `rdata`
    after every clock edge, and it is the word the port's contract says (so the two cannot agree by being wrong)."""
    import random

    from myhdl import Signal, Simulation, StopSimulation, block, delay, instance, intbv
    from myhdl import _simulator as myhdl_simulator

    from hdl.ram import ram
    from hdl.sim_ram import sim_ram

    words = 8
    rng = random.Random(7)
    mismatches: list[tuple[int, int, int, int]] = []  # cycle, the contract's rdata, ram's, sim_ram's
    memory = [0] * words
    reads = 0

    @block
    def side_by_side():
        clk = Signal(bool(0))
        word_addr, lanes, wdata = Signal(intbv(0)[3:]), Signal(intbv(0)[8:]), Signal(intbv(0)[64:])
        model_rdata, sim_rdata = Signal(intbv(0)[64:]), Signal(intbv(0)[64:])
        model = ram(clk, word_addr, lanes, wdata, model_rdata, words=words)
        simulated = sim_ram(clk, word_addr, lanes, wdata, sim_rdata, words=words)

        @instance
        def stimulus():
            nonlocal reads
            expected = 0
            for cycle in range(400):
                address, data = rng.randrange(words), rng.getrandbits(64)
                enabled = rng.randrange(1, 256) if rng.random() < 0.5 else 0
                word_addr.next, lanes.next, wdata.next = address, enabled, data
                if enabled:
                    mask = sum(0xFF << 8 * lane for lane in range(8) if enabled >> lane & 1)
                    memory[address] = memory[address] & ~mask | data & mask
                else:
                    expected, reads = memory[address], reads + 1
                yield delay(1)
                clk.next = True
                yield delay(1)
                clk.next = False
                if not expected == model_rdata.val == sim_rdata.val:
                    mismatches.append((cycle, expected, int(model_rdata.val), int(sim_rdata.val)))
            raise StopSimulation

        return model, simulated, stimulus

    first_signal = len(myhdl_simulator._signals)
    try:
        Simulation(side_by_side()).run(quiet=1)
    finally:
        del myhdl_simulator._signals[first_signal:]
    assert mismatches == []
    assert reads > 150 and sum(memory) > 0
