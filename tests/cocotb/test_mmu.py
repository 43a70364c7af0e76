"""The whole `mmu` (its exported Verilog) under cocotb: short scenarios through the request/response handshake, with
and without idle cycles between requests.

Inside the simulator every response is checked against the TLB-free x86 model of tests/test_random_translation.py
(so CR2/PFEC, A/D and faults are architecture, not our own output), and a few events against what the scenario
implies (a first access walks four levels; the next one hits). The pytest entry `test_mmu_runner` then requires the
events of each scenario to equal the reference backend's (all but timing) and, for the hand-written back-to-back
scenarios on Verilator, the
MyHDL simulation's cycle for cycle.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import cocotb
import pytest
import tb
from x86_model import Machine, Memory, Request, describe, generate_stream

from cosim.analysis.lockstep import first_divergence
from cosim.backends import open_backend
from cosim.backends.cocotb_driver import MmuDriver
from hdl.protocol import CR0_PG, AccessEvent, Csr, ErrorCode, Fault, MmuConfig, Op, Pte, TlbPolicy

P, W, U, A, NX, G = (Pte.PRESENT, Pte.WRITABLE, Pte.USER_ACCESSIBLE, Pte.ACCESSED, Pte.NO_EXECUTE, Pte.GLOBAL)
PML4, PDPT, PD, PT = 0x1000, 0x2000, 0x3000, 0x4000


def physical_round_trip() -> list[Request]:
    """Paging off: stores of every size read back at other sizes (little-endian), then ALIGN and BUS."""
    return [
        Request(Op.STORE, 0x100, 3, 0x1122_3344_5566_7788),
        Request(Op.STORE, 0x102, 1, 0xBEEF),
        Request(Op.STORE, 0x107, 0, 0xA5),
        Request(Op.LOAD, 0x100, 3),
        Request(Op.LOAD, 0x104, 2),
        Request(Op.LOAD, 0x101, 0),
        Request(Op.LOAD, 0x103, 1),  # misaligned
        Request(Op.LOAD, 1 << 20, 3),  # just beyond the 1 MiB of RAM
        Request(Op.CSR_READ, Csr.CFG_MEM_BYTES),
    ]


def _boot(entries: dict[int, int]) -> list[Request]:
    """Physical stores of `entries` (address -> value), CR3 = PML4, paging on."""
    return [*(Request(Op.STORE, addr, 3, value) for addr, value in entries.items()),
            Request(Op.CSR_WRITE, Csr.CR3, 3, PML4), Request(Op.CSR_WRITE, Csr.CR0, 3, CR0_PG)]


# 0x5000 -> 0x9000 (user, writable), 0x6000 -> 0xA000 (supervisor, global), 0x7000 -> 0xB000 (user, read-only, NX)
HAND_TABLES = {PML4: PDPT | P | W | U, PDPT: PD | P | W | U, PD: PT | P | W | U,
               PT + 8 * 5: 0x9000 | P | W | U, PT + 8 * 6: 0xA000 | P | W | G, PT + 8 * 7: 0xB000 | P | U | NX}
BOOT_OPS = len(HAND_TABLES) + 2


def walk_then_hit() -> list[Request]:
    return [*_boot(HAND_TABLES),
            Request(Op.LOAD, 0x5008, 3),  # miss: a 4-level walk
            Request(Op.LOAD, 0x5010, 3),  # hit
            Request(Op.STORE, 0x5010, 3, 0xC0FFEE),  # hit, D clear: re-walk to set D
            Request(Op.LOAD, 0x5010, 3, user=True)]


def faults() -> list[Request]:
    return [*_boot(HAND_TABLES),
            Request(Op.LOAD, 0x6000, 3, user=True),  # supervisor page: P|U
            Request(Op.CSR_READ, Csr.CR2), Request(Op.CSR_READ, Csr.PFEC),
            Request(Op.STORE, 0x7000, 2, 1, user=True),  # read-only: P|W|U
            Request(Op.LOAD, 0x7000, 2, user=True, fetch=True),  # NX: P|U|I
            Request(Op.LOAD, 0x8000, 3),  # absent: no P
            Request(Op.CSR_READ, Csr.PFEC),
            Request(Op.LOAD, 0x0000_8000_0000_0000, 3),  # non-canonical: GP
            Request(Op.LOAD, 0x5004, 3),  # misaligned: ALIGN
            Request(Op.CSR_WRITE, Csr.PFEC, 3, 0)]  # read-only CSR: GP


def invalidations() -> list[Request]:
    return [*_boot(HAND_TABLES),
            Request(Op.LOAD, 0x5000, 3), Request(Op.LOAD, 0x6000, 3),
            Request(Op.INVLPG, 0x5123), Request(Op.LOAD, 0x5000, 3),  # dropped: walks again
            Request(Op.CSR_WRITE, Csr.CR3, 3, PML4),  # drops non-global entries only
            Request(Op.LOAD, 0x5000, 3), Request(Op.LOAD, 0x6000, 3),
            Request(Op.FLUSH, 0), Request(Op.LOAD, 0x6000, 3)]  # global entries go too


def random_stream(seed: int) -> Any:
    return lambda config: generate_stream(seed, 1200, config).requests


SCENARIOS: dict[str, tuple[Any, int]] = {  # name -> (requests for a config, max idle cycles between requests)
    "physical_round_trip": (lambda config: physical_round_trip(), 0),
    "walk_then_hit": (lambda config: walk_then_hit(), 0),
    "faults_under_stalls": (lambda config: faults(), 3),
    "invalidations_under_stalls": (lambda config: invalidations(), 2),
    "random_stream_back_to_back": (random_stream(31), 0),
    "random_stream_under_stalls": (random_stream(32), 4),
}


def job_config() -> MmuConfig:
    return MmuConfig(**tb.job()["params"])


async def run_scenario(dut: Any, name: str) -> list[AccessEvent]:
    """Run scenario `name` on the design, checking every response against the model; save and return the events."""
    config = job_config()
    requests, max_gap = SCENARIOS[name][0](config), SCENARIOS[name][1]
    bench = MmuDriver(dut, strict=True, seed=len(name), max_gap=max_gap)
    await bench.reset()
    model = Machine(config)
    for seq, request in enumerate(requests):
        response = await bench.transact(*request)
        expected = model.execute(*request)
        assert response == expected, f"operation {seq}: {describe(request)} -> {response}, the model says {expected}"
    events = list(bench.events)
    tb.save_trace(name, [list(event) for event in events])
    await clear_ram(bench, model.memory)
    return events


async def clear_ram(bench: MmuDriver, memory: Memory) -> None:
    """Zero every word the scenario left non-zero. The RAM is never reset and outlives a cocotb test (they share
    one simulation), while each scenario's model starts from a zeroed RAM, as the other backends do."""
    await bench.transact(Op.CSR_WRITE, Csr.CR0, 3, 0)  # paging off: physical stores
    for index, word in enumerate(memoryview(memory.data).cast("Q")):
        if word:
            await bench.transact(Op.STORE, 8 * index, 3, 0)


@cocotb.test()
async def physical_round_trip_is_little_endian_and_checked(dut: Any) -> None:
    events = await run_scenario(dut, "physical_round_trip")
    assert events[3].data == 0xA522_3344_BEEF_7788 and events[4].data == 0xA522_3344 and events[5].data == 0x77
    assert not any(e.tlb_hit or e.tlb_miss for e in events), "paging off never looks up the TLB"
    assert [e.paddr for e in events[:6]] == [0x100, 0x102, 0x107, 0x100, 0x104, 0x101]


@cocotb.test()
async def first_access_walks_then_hits(dut: Any) -> None:
    first, second, store, user_load = (await run_scenario(dut, "walk_then_hit"))[BOOT_OPS:]
    assert first.tlb_miss and first.walk_levels == 4 and first.paddr == 0x9008
    assert second.tlb_hit and second.walk_levels == 0 and second.paddr == 0x9010
    assert store.tlb_hit and store.walk_levels >= 1 and store.ad_writes == 1, "D is set by a re-walk"
    assert user_load.tlb_hit and user_load.data == 0xC0FFEE


@cocotb.test()
async def faults_report_cr2_and_error_codes(dut: Any) -> None:
    events = (await run_scenario(dut, "faults_under_stalls"))[BOOT_OPS:]
    assert (events[0].fault, events[0].errcode) == (Fault.PAGE, ErrorCode.P | ErrorCode.U)
    assert events[1].data == 0x6000 and events[2].data == ErrorCode.P | ErrorCode.U
    assert events[4].errcode == ErrorCode.P | ErrorCode.U | ErrorCode.I
    assert [e.fault for e in events[5:]] == [Fault.PAGE, Fault.NONE, Fault.GP, Fault.ALIGN, Fault.GP]


@cocotb.test()
async def invlpg_cr3_and_flush_drop_what_they_should(dut: Any) -> None:
    events = (await run_scenario(dut, "invalidations_under_stalls"))[BOOT_OPS:]
    assert events[3].tlb_miss, "INVLPG dropped the page"
    assert events[5].tlb_miss and events[6].tlb_hit, "a CR3 write keeps the global page only"
    assert events[8].tlb_miss, "FLUSH drops global pages too"


@cocotb.test()
@cocotb.parametrize(name=["random_stream_back_to_back", "random_stream_under_stalls"])
async def random_stream_matches_the_model(dut: Any, name: str) -> None:
    events = await run_scenario(dut, name)
    assert any(e.tlb_hit for e in events) and any(e.evicted_vpn >= 0 for e in events)


# -- the pytest entry -------------------------------------------------------------------------------------------------

PARAMS = [
    MmuConfig(tlb_entries=4, tlb_ways=0, tlb_policy=TlbPolicy.PLRU, pwc_entries=2),
    MmuConfig(tlb_entries=8, tlb_ways=2, tlb_policy=TlbPolicy.FIFO, pwc_entries=0, mem_latency=3),
]


def _events(run_dir: Path, name: str) -> list[AccessEvent]:
    return [AccessEvent(*fields) for fields in json.loads((run_dir / f"{name}.json").read_text())]


def _run_backend(backend: str, config: MmuConfig, requests: list[Request]) -> tb.EventRun:
    with open_backend(backend, config, trace=True) as sim:
        for request in requests:
            sim.transact(*request)
        return tb.EventRun(backend, sim.drain_events())


@pytest.mark.rtl
@pytest.mark.parametrize(("simulator", "config"), tb.matrix(
    PARAMS, lambda c: f"e{c.tlb_entries}w{c.ways}_l{c.mem_latency}", verilator=(0, 1)))
def test_mmu_runner(simulator: str, config: MmuConfig) -> None:
    from conftest import require_simulator

    from cosim.toolchain.export import config_tag

    require_simulator(f"cocotb-{simulator}")
    params = {**dataclasses.asdict(config), "tlb_policy": int(config.tlb_policy)}
    run_dir = tb.run_mmu_module(simulator, config, "test_mmu", params)
    for name, (requests_for, max_gap) in SCENARIOS.items():
        requests = requests_for(config)
        cocotb_run = tb.EventRun(f"cocotb-{simulator}", _events(run_dir, name))
        others = [_run_backend("reference", config, requests)]
        if max_gap == 0 and simulator == "verilator" and not name.startswith("random"):
            others.append(_run_backend("myhdl", config, requests))  # cycle for cycle
        for other in others:
            divergence = first_divergence([other, cocotb_run])
            assert divergence is None, f"{config_tag(config)} {name}:\n{divergence.report()}"
    shutil.rmtree(run_dir, ignore_errors=True)
