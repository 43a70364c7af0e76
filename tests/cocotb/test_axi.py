"""The `mmu` built with memory "axi" under cocotb, against cocotbext-axi's AxiRam: the kernel under random pauses on
every channel, error responses at chosen addresses, AxPROT, and the AXI rules a manager must keep.

Inside the simulator:
- `seed_programs_under_random_pauses` runs the seed's demo and its tests (reduced) with every channel of the AxiRam
  pausing at random, while `AxiChecker` asserts, cycle by cycle, that the MMU keeps each VALID and its payload
  until the handshake, has one transfer in flight at most, and sends only single-beat 64-bit INCR transfers; it
  also records the order of each write's AW and W handshakes, which the pytest entry requires in every order.
- `error_responses_end_in_bus_faults` injects SLVERR and DECERR on an entry read, a leaf's and a non-leaf's A
  write-back, a data load and a data store, and checks the response (Fault.BUS, no error code, no physical address,
  CR2 untouched), that nothing was cached (a repeat access walks again, and starts no deeper in the PWC than the
  entry before the error), and that the translation of a successful walk survives a data access's error.
- `prot_marks_privilege_and_fetches` checks AxPROT on the walker's and on user, supervisor and fetch accesses.

The pytest entry `test_axi_runner` then requires each program's events to equal reference's (every field but the
timing ones) and, for the default configuration, the bram build's on the Verilator backend: the same firmware
results and the same accesses, at other cycles.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
from pathlib import Path
from typing import Any, ClassVar

import cocotb
import pytest
import tb
from cocotb.triggers import RisingEdge

from cosim.backends.axi_ram import CHANNELS, ErrorRegion, attach_axi_ram
from cosim.backends.cocotb_driver import MmuDriver, _fast_reader
from cosim.backends.cocotb_sim import run_firmware
from hdl.protocol import (
    AXI_PROT_WALKER,
    CR0_PG,
    AccessEvent,
    AxiProt,
    AxiResp,
    Counter,
    Csr,
    Fault,
    MmuConfig,
    Op,
    Pte,
    TlbPolicy,
)

P, W, U, A, D = Pte.PRESENT, Pte.WRITABLE, Pte.USER_ACCESSIBLE, Pte.ACCESSED, Pte.DIRTY
SEED_TESTS = "firmware.heap_allocation_tests"
SEED_TEST_NAMES = ("simple_allocation", "large_vec", "many_boxes", "many_boxes_long_lived")
# `make test`: the demo, and the seed's tests in one boot (as its test_main runs them) with short loops;
# `make test-full`: each test in its own boot, reduced as tests/test_seed_on_backends.py reduces them
QUICK = {"demo": ("firmware.kernel:demo", {}),
         "every_test": (f"{SEED_TESTS}:every_test", {"sizes": {"large_vec": 60, "many_boxes": 60,
                                                                "many_boxes_long_lived": 60}})}
REDUCED = {"demo": QUICK["demo"],
           **{name: (f"{SEED_TESTS}:{name}", {"n": None if name == "simple_allocation" else 300})
              for name in SEED_TEST_NAMES}}
PROGRAM_SETS = {"quick": QUICK, "reduced": REDUCED}
PAUSE_PROBABILITY = 0.3


def job_config() -> MmuConfig:
    return MmuConfig(**tb.job()["params"]["config"])


def save(name: str, payload: Any) -> None:
    (Path(tb.job()["trace_dir"]) / f"{name}.pickle").write_bytes(pickle.dumps(payload))


class AxiChecker:
    """Watches the AXI port at every rising edge (cocotb reads the values the edge samples) and asserts what a
    manager must keep: VALID and the payload held until READY, one transfer in flight, one beat of 8 bytes, INCR.
    Records every AR and AW handshake as (channel, address, prot), and each write's AW/W handshake order."""

    PAYLOAD: ClassVar[dict[str, tuple[str, ...]]] = {
        "aw": ("awaddr", "awprot", "awid", "awlen", "awsize", "awburst"), "w": ("wdata", "wstrb", "wlast"),
        "ar": ("araddr", "arprot", "arid", "arlen", "arsize", "arburst")}

    def __init__(self, dut: Any) -> None:
        self.dut = dut
        self.handshakes: list[tuple[str, int, int]] = []
        self.write_orders: dict[str, int] = {"aw first": 0, "w first": 0, "same cycle": 0}
        # straight from the GPI handles, as the driver reads (cosim.backends.cocotb_driver): this runs every cycle
        handshake_signals = (f"{channel}{signal}" for channel in CHANNELS for signal in ("valid", "ready"))
        payload_signals = (name for fields in self.PAYLOAD.values() for name in fields)
        self._readers = {name: _fast_reader(getattr(dut, f"m_axi_{name}"))
                         for name in (*handshake_signals, *payload_signals)}
        self._reset = _fast_reader(dut.rst)
        self._task = cocotb.start_soon(self._watch())

    def _get(self, name: str) -> int:
        return self._readers[name]()

    async def _watch(self) -> None:
        held: dict[str, tuple[int, ...] | None] = {"aw": None, "w": None, "ar": None}
        in_flight = 0  # transfers issued (AR or AW handshake) whose response has not come
        aw_cycle = w_cycle = None
        cycle = 0
        while True:
            await RisingEdge(self.dut.clk)
            cycle += 1
            if self._reset():
                continue
            for channel, fields in self.PAYLOAD.items():
                valid, ready = self._get(f"{channel}valid"), self._get(f"{channel}ready")
                payload = tuple(self._get(name) for name in fields) if valid else None
                if held[channel] is not None:
                    assert valid, f"cycle {cycle}: {channel.upper()}VALID fell before its handshake"
                    assert payload == held[channel], f"cycle {cycle}: the {channel.upper()} payload changed"
                held[channel] = payload if valid and not ready else None
                if not (valid and ready):
                    continue
                if channel != "w":
                    address, prot, _, length, size, burst = payload
                    assert (length, size, burst) == (0, 3, 1), f"cycle {cycle}: not one 8-byte INCR beat"
                    assert in_flight == 0, f"cycle {cycle}: a second transfer while one is in flight"
                    in_flight += 1
                    self.handshakes.append((channel, address, prot))
                else:
                    assert payload[2] == 1, f"cycle {cycle}: WLAST low on a single-beat write"
                if channel == "aw":
                    aw_cycle = cycle
                if channel == "w":
                    w_cycle = cycle
            if aw_cycle is not None and w_cycle is not None:
                order = "same cycle" if aw_cycle == w_cycle else "aw first" if aw_cycle < w_cycle else "w first"
                self.write_orders[order] += 1
                aw_cycle = w_cycle = None
            for channel in ("r", "b"):
                if self._get(f"{channel}valid") and self._get(f"{channel}ready"):
                    assert in_flight == 1, f"cycle {cycle}: a {channel.upper()} response with nothing in flight"
                    in_flight -= 1

    def stop(self) -> None:
        self._task.cancel()


# -- the seed's programs under random pauses ---------------------------------------------------------------------


@cocotb.test()
async def seed_programs_under_random_pauses(dut: Any) -> None:
    """Each program of the job's set from reset and a zeroed RAM, every channel pausing at random."""
    config = job_config()
    ram = attach_axi_ram(dut, config, pause_seed=1, pause_probability=PAUSE_PROBABILITY)
    checker = AxiChecker(dut)
    for index, (name, (program, args)) in enumerate(PROGRAM_SETS[tb.job()["params"]["programs"]].items()):
        ram.write(0, bytes(ram.size))
        checker.write_orders = dict.fromkeys(checker.write_orders, 0)
        driver = MmuDriver(dut, trace=True)
        await driver.reset(clock_in_design=index > 0)  # the first reset starts the clock
        value, _, _, _ = await run_firmware(driver, program, args, True)
        save(name, {"value": value, "events": [tuple(event) for event in driver.events],
                    "write_orders": checker.write_orders})
    checker.stop()


# -- error responses ---------------------------------------------------------------------------------------------

PML4, PDPT, PD, PT = 0x1000, 0x2000, 0x3000, 0x4000
PDPT_HIGH, PD_HIGH, PT_HIGH = 0xC000, 0xD000, 0xE000  # the tables under PML4 entry 1 (virtual 0x80_0000_0000)
HIGH = 0x80_0000_0000
DATA_FRAME = 0xB000  # the frame of virtual page 0x7000
TABLES = {
    PML4: PDPT | P | W | U | A, PML4 + 8: PDPT_HIGH | P | W | U | A,
    PDPT: PD | P | W | U | A, PD: PT | P | W | U | A,
    PT + 8 * 5: 0x9000 | P | W | U | A,  # 0x5000: nothing to write back on a load
    PT + 8 * 6: 0xA000 | P | W | U,  # 0x6000: A clear, written back by the first walk
    PT + 8 * 7: DATA_FRAME | P | W | U | A | D,  # 0x7000: the data errors
    PDPT_HIGH: PD_HIGH | P | W | U,  # a non-leaf entry with A clear
    PD_HIGH: PT_HIGH | P | W | U | A, PT_HIGH: 0xF000 | P | W | U | A | D,
}


class Bench:
    """The MMU, its AxiRam with a list of error regions the scenario changes, and expectations on each access."""

    def __init__(self, dut: Any, config: MmuConfig) -> None:
        self.errors: list[ErrorRegion] = []
        self.ram = attach_axi_ram(dut, config, errors=self.errors)
        self.driver = MmuDriver(dut, trace=True, strict=True)

    async def boot(self) -> None:
        await self.driver.reset()
        for address, entry in TABLES.items():
            await self.expect(Op.STORE, address, wdata=entry)
        await self.expect(Op.CSR_WRITE, Csr.CR3, wdata=PML4)
        await self.expect(Op.CSR_WRITE, Csr.CR0, wdata=CR0_PG)

    async def expect(self, op: int, addr: int, *, wdata: int = 0, size: int = 3, fault: int = Fault.NONE,
                     **event: Any) -> AccessEvent:  # fmt: skip
        rdata, got_fault, errcode = await self.driver.transact(op, addr, size, wdata)
        record = self.driver.events[-1]
        what = f"{Op(op).name} {addr:#x}"
        assert got_fault == fault, f"{what}: fault {Fault(got_fault).name}, expected {Fault(fault).name}"
        if fault == Fault.BUS:
            assert (errcode, record.paddr, rdata) == (0, 0, 0), f"{what}: a BUS fault has no errcode, paddr or data"
        for field, value in event.items():
            assert getattr(record, field) == value, f"{what}: {field} = {getattr(record, field)}, expected {value}"
        return record

    async def csr(self, number: int) -> int:
        return (await self.expect(Op.CSR_READ, number)).data

    def entry(self, address: int) -> int:
        return int.from_bytes(self.ram.read(address, 8), "little")


@cocotb.test()
async def error_responses_end_in_bus_faults(dut: Any) -> None:
    bench = Bench(dut, job_config())
    await bench.boot()
    pwc = job_config().pwc_entries > 0
    cr2 = await bench.csr(Csr.CR2)

    # The leaf's read fails: BUS, nothing filled; the entries above it were read fine and cached in the PWC.
    bench.errors.append(ErrorRegion(PT + 8 * 5, PT + 8 * 6, AxiResp.SLVERR))
    await bench.expect(Op.LOAD, 0x5000, fault=Fault.BUS, tlb_miss=True, walk_levels=4, pwc_hits=0)
    await bench.expect(Op.LOAD, 0x5000, fault=Fault.BUS, tlb_miss=True, walk_levels=1 if pwc else 4,
                       pwc_hits=int(pwc))
    bench.errors.clear()
    await bench.expect(Op.LOAD, 0x5000, tlb_miss=True, walk_levels=1 if pwc else 4, paddr=0x9000)
    await bench.expect(Op.LOAD, 0x5008, tlb_hit=True)

    # A non-leaf entry's read fails (DECERR): it is not cached, so the repeat reads it again.
    await bench.expect(Op.FLUSH, 0)
    bench.errors.append(ErrorRegion(PDPT, PDPT + 8, AxiResp.DECERR))
    await bench.expect(Op.LOAD, 0x5000, fault=Fault.BUS, tlb_miss=True, walk_levels=2, pwc_hits=0)
    await bench.expect(Op.LOAD, 0x5000, fault=Fault.BUS, tlb_miss=True, walk_levels=1 if pwc else 2,
                       pwc_hits=int(pwc))
    bench.errors.clear()

    # The leaf's A write-back fails: BUS, no fill, the entry still without A; then it succeeds.
    bench.errors.append(ErrorRegion(PT + 8 * 6, PT + 8 * 7, AxiResp.SLVERR, reads=False))
    await bench.expect(Op.LOAD, 0x6000, fault=Fault.BUS, tlb_miss=True, ad_writes=0)
    await bench.expect(Op.LOAD, 0x6000, fault=Fault.BUS, tlb_miss=True, ad_writes=0)
    assert not bench.entry(PT + 8 * 6) & A, "a failed write-back wrote A"
    bench.errors.clear()
    await bench.expect(Op.LOAD, 0x6000, tlb_miss=True, ad_writes=1, paddr=0xA000)
    assert bench.entry(PT + 8 * 6) & A
    await bench.expect(Op.LOAD, 0x6000, tlb_hit=True)

    # A non-leaf entry's A write-back fails (DECERR): the entry is not cached in the PWC either.
    bench.errors.append(ErrorRegion(PDPT_HIGH, PDPT_HIGH + 8, AxiResp.DECERR, reads=False))
    await bench.expect(Op.LOAD, HIGH, fault=Fault.BUS, tlb_miss=True, walk_levels=2, ad_writes=0)
    await bench.expect(Op.LOAD, HIGH, fault=Fault.BUS, tlb_miss=True, walk_levels=1 if pwc else 2,
                       pwc_hits=int(pwc))
    bench.errors.clear()
    await bench.expect(Op.LOAD, HIGH, tlb_miss=True, walk_levels=3 if pwc else 4, ad_writes=1, paddr=0xF000)

    # A data load's and a data store's errors: BUS, but the translation stays cached; a failed store writes nothing.
    bench.errors.append(ErrorRegion(DATA_FRAME, DATA_FRAME + 8, AxiResp.SLVERR))
    bench.errors.append(ErrorRegion(DATA_FRAME + 0x20, DATA_FRAME + 0x28, AxiResp.DECERR, reads=False))
    await bench.expect(Op.LOAD, 0x7000, fault=Fault.BUS, tlb_miss=True, walk_levels=1 if pwc else 4)
    await bench.expect(Op.LOAD, 0x7010, tlb_hit=True, paddr=DATA_FRAME + 0x10)
    await bench.expect(Op.LOAD, 0x7004, size=2, fault=Fault.BUS, tlb_hit=True)
    await bench.expect(Op.STORE, 0x7020, wdata=0x1234, fault=Fault.BUS, tlb_hit=True)
    await bench.expect(Op.LOAD, 0x7020, tlb_hit=True, data=0)
    await bench.expect(Op.STORE, 0x7028, wdata=0x5678, tlb_hit=True, paddr=DATA_FRAME + 0x28)
    assert bench.entry(DATA_FRAME + 0x28) == 0x5678

    # A BUS fault leaves CR2 and the error code alone, and counts in FAULTS_BUS.
    assert await bench.csr(Csr.CR2) == cr2
    bus_faults = sum(event.fault == Fault.BUS for event in bench.driver.events)
    assert bus_faults == 11 and await bench.csr(Csr.COUNTER_BASE + Counter.FAULTS_BUS) == bus_faults


@cocotb.test()
async def prot_marks_privilege_and_fetches(dut: Any) -> None:
    bench = Bench(dut, job_config())
    checker = AxiChecker(dut)
    await bench.boot()
    checker.handshakes.clear()
    await bench.expect(Op.LOAD, 0x5000, tlb_miss=True)  # the walk reads as a privileged data access
    walk_prot = {prot for channel, address, prot in checker.handshakes if address < 0x5000}
    assert walk_prot == {AXI_PROT_WALKER}, walk_prot
    for user in (False, True):
        for fetch in (False, True):
            checker.handshakes.clear()
            _, fault, _ = await bench.driver.transact(Op.LOAD, 0x5000, 3, 0, user, fetch)
            assert fault == Fault.NONE
            prot = AxiProt.NON_SECURE | (0 if user else AxiProt.PRIVILEGED) | (AxiProt.INSTRUCTION if fetch else 0)
            assert checker.handshakes == [("ar", 0x9000, prot)], (user, fetch, checker.handshakes)
    checker.handshakes.clear()
    await bench.expect(Op.STORE, 0x5008, wdata=1)  # D clear: a re-walk (privileged) sets it, then the store
    assert [prot for channel, _, prot in checker.handshakes if channel == "aw"] == [
        AXI_PROT_WALKER, AxiProt.NON_SECURE | AxiProt.PRIVILEGED]
    checker.stop()


# -- cycle costs ---------------------------------------------------------------------------------------------------


class FixedLatencyMemory:
    """A minimal AXI subordinate with fixed latencies, to measure cycle costs: AR, AW and W always ready; the R beat
    `read_latency` clock edges after the edge of the AR handshake, the B response `write_latency` edges after the
    later of AW's and W's (1: in the very next cycle). Always OKAY; never pauses; one transfer at a time."""

    def __init__(self, dut: Any, read_latency: int, write_latency: int, size: int) -> None:
        self.dut, self.read_latency, self.write_latency = dut, read_latency, write_latency
        self.mem = bytearray(size)
        self._task = cocotb.start_soon(self._serve())

    async def _serve(self) -> None:
        dut, get = self.dut, (lambda name: int(getattr(self.dut, f"m_axi_{name}").value))
        for name in ("arready", "awready", "wready"):
            getattr(dut, f"m_axi_{name}").value = 1
        for name in ("rvalid", "bvalid", "rresp", "bresp", "rid", "bid", "rdata"):
            getattr(dut, f"m_axi_{name}").value = 0
        dut.m_axi_rlast.value = 1
        cycle, r_due, b_due, aw_cycle, w_cycle, address = 0, None, None, None, None, 0
        while True:
            await RisingEdge(dut.clk)
            cycle += 1
            if int(dut.rst.value):
                continue
            if get("rvalid") and get("rready"):
                dut.m_axi_rvalid.value = 0
            if get("bvalid") and get("bready"):
                dut.m_axi_bvalid.value = 0
            if get("arvalid"):
                address = get("araddr")
                r_due = cycle + self.read_latency - 1
            if get("awvalid"):
                address, aw_cycle = get("awaddr"), cycle
            if get("wvalid"):
                data, strobes, w_cycle = get("wdata").to_bytes(8, "little"), get("wstrb"), cycle
                for lane in range(8):
                    if strobes >> lane & 1:
                        self.mem[address + lane] = data[lane]
            if aw_cycle is not None and w_cycle is not None:
                b_due, aw_cycle, w_cycle = max(aw_cycle, w_cycle) + self.write_latency - 1, None, None
            if r_due == cycle:
                dut.m_axi_rdata.value = int.from_bytes(self.mem[address:address + 8], "little")
                dut.m_axi_rvalid.value, r_due = 1, None
            if b_due == cycle:
                dut.m_axi_bvalid.value, b_due = 1, None


LATENCIES = [(1, 1), (2, 1), (1, 3), (4, 2), (8, 8)]  # (read, write) latency of the subordinate, in clock edges


@cocotb.test()
@cocotb.parametrize(latencies=LATENCIES)
async def cycle_costs_follow_the_subordinates_latency(dut: Any, latencies: tuple[int, int]) -> None:
    """Each operation's cycles (from the edge that accepts it to its response cycle: the back-to-back throughput)
    against the formulas of docs/hardware.md, with R after `read` and B after `write` clock edges."""
    read, write = latencies
    config = job_config()
    FixedLatencyMemory(dut, read, write, config.mem_bytes)
    driver = MmuDriver(dut, trace=True)
    await driver.reset()
    tables = {PML4: PDPT | P | W | U | A, PDPT: PD | P | W | U | A, PD: PT | P | W | U | A,
              PT + 8 * 5: 0x9000 | P | W | U | A, PT + 8 * 6: 0xA000 | P | W | U,
              PML4 + 8: (1 << 30) | P | W | U | A}  # 0x80_0000_0000: its PDPT lies beyond the RAM
    for address, entry in tables.items():
        await driver.transact(Op.STORE, address, 3, entry)
    await driver.transact(Op.CSR_WRITE, Csr.CR3, 3, PML4)
    await driver.transact(Op.CSR_WRITE, Csr.CR0, 3, CR0_PG)
    n = 1 if config.pwc_entries else 4  # entries a walk reads once the PWC holds the PD entry
    level, write_back = 4 + read, 2 + write  # the cycles of an entry read (to CHECK), of an A/D write-back (WRITE, B)
    load, store = 2 + read, 2 + write  # a data access after its decision: issued from registers, then R or B
    walk = 4  # LOOKUP, the walker's START, DONE, and RESP: the cycles of a walk's operation beyond its entries
    cases = [  # (what, op, address, expected cycles, expected walk cycles, fault)
        ("4-level walk, LOAD", Op.LOAD, 0x5000, walk + 4 * level + load, 4 * level, Fault.NONE),
        ("TLB hit, LOAD", Op.LOAD, 0x5008, 2 + load, 0, Fault.NONE),
        ("hit with D clear: re-walk + D write-back, STORE", Op.STORE, 0x5008,
         walk + n * level + write_back + store, n * level + write_back, Fault.NONE),
        ("TLB hit, STORE", Op.STORE, 0x5010, 2 + store, 0, Fault.NONE),
        ("walk + A write-back, LOAD", Op.LOAD, 0x6000, walk + n * level + write_back + load,
         n * level + write_back, Fault.NONE),
        ("walk ending in a page fault", Op.LOAD, 0x8000, walk + n * level, n * level, Fault.PAGE),
        ("walk ending in BUS: entry 2 beyond the RAM", Op.LOAD, HIGH, walk + 1 + level, level + 1, Fault.BUS),
        ("CSR read", Op.CSR_READ, Csr.CR3, 2, 0, Fault.NONE),
        ("paging on: TLB hit, LOAD", Op.LOAD, 0x6008, 2 + load, 0, Fault.NONE),
    ]
    measured = {}
    for what, op, address, expected, walk_cycles, expected_fault in cases:
        before = driver.events[-1].cycle
        _, fault, _ = await driver.transact(op, address, 3, 1)
        assert fault == expected_fault, what
        cycles = driver.events[-1].cycle - before
        measured[what] = (cycles, driver.events[-1].walk_cycles)
        assert (cycles, driver.events[-1].walk_cycles) == (expected, walk_cycles), (
            f"read {read}, write {write}: {what} took {cycles} cycles ({driver.events[-1].walk_cycles} walking), "
            f"expected {expected} ({walk_cycles})")
    save(f"cycles_r{read}_w{write}", measured)


# -- the pytest entry ---------------------------------------------------------------------------------------------

PARAMS = [
    MmuConfig(memory="axi"),
    MmuConfig(tlb_entries=4, tlb_ways=2, tlb_policy=TlbPolicy.FIFO, pwc_entries=0, maxphyaddr=52, memory="axi",
              axi_id_width=1),
]


def _untimed(events: list[AccessEvent]) -> list[AccessEvent]:
    return [event._replace(cycle=0, walk_cycles=0) for event in events]


def _name(config: MmuConfig) -> str:
    return f"e{config.tlb_entries}w{config.ways}_pa{config.maxphyaddr}_id{config.axi_id_width}"


@pytest.mark.rtl
@pytest.mark.parametrize(("simulator", "config"), tb.matrix(PARAMS, _name, verilator=(0,)))
def test_axi_runner(simulator: str, config: MmuConfig) -> None:
    check_axi_build(simulator, config, "quick")


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize(("simulator", "config"), tb.matrix(PARAMS, _name, verilator=(0, 1)))
def test_axi_runner_reduced_seed_tests(simulator: str, config: MmuConfig) -> None:
    check_axi_build(simulator, config, "reduced")


def check_axi_build(simulator: str, config: MmuConfig, programs: str) -> None:
    """Run this module's cocotb tests on the AXI build of `config`, with the programs of PROGRAM_SETS[programs];
    compare their events with reference's and the bram build's."""
    from conftest import require_simulator

    from cosim.analysis.lockstep import first_divergence
    from cosim.runner import run_program
    from cosim.toolchain.export import config_tag

    require_simulator(f"cocotb-{simulator}")
    params = {"config": {**dataclasses.asdict(config), "tlb_policy": int(config.tlb_policy)}, "programs": programs}
    run_dir = tb.run_mmu_module(simulator, config, "test_axi", params)
    orders = {"aw first": 0, "w first": 0, "same cycle": 0}
    bram = dataclasses.replace(config, memory="bram", axi_id_width=MmuConfig().axi_id_width)
    for name, (program, args) in PROGRAM_SETS[programs].items():
        saved = pickle.loads((run_dir / f"{name}.pickle").read_bytes())
        events = [AccessEvent(*fields) for fields in saved["events"]]
        axi = tb.EventRun(f"cocotb-{simulator} axi", events, saved["value"])
        reference = run_program(program, "reference", config, args=args, trace=True)
        divergence = first_divergence([reference, axi])
        assert divergence is None, f"{config_tag(config)} {name}:\n{divergence.report()}"
        if config == PARAMS[0]:  # the bram build of the same MMU: the same accesses, at other cycles
            on_bram = run_program(program, "verilator", bram, args=args, trace=True)
            assert on_bram.value == axi.value and _untimed(on_bram.events) == _untimed(axi.events)
            assert axi.events[-1].cycle > on_bram.events[-1].cycle
        for order, count in saved["write_orders"].items():
            orders[order] += count
    assert all(orders.values()), f"the pauses did not put AW and W in every order: {json.dumps(orders)}"
    shutil.rmtree(run_dir, ignore_errors=True)
