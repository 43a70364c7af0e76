"""The integrator's kit (`mmucosim verilog`): the generated datasheet (up to date, and its cycle table measured on the
RTL), the RAM's initial contents and --ram-init on Icarus with a plain Verilog bench, and the FuseSoC core."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cosim.backends import open_backend
from cosim.toolchain import build
from cosim.toolchain.datasheet import CYCLE_TABLE, DATASHEET, PORT_DOCS, datasheet_text
from cosim.toolchain.export import RamInitError, lint, read_ram_init
from cosim.toolchain.kit import CORE_NAME, write_kit
from hdl.protocol import (
    AXI_PORTS_IN,
    AXI_PORTS_OUT,
    CR0_PG,
    PORTS_IN,
    PORTS_OUT,
    AccessEvent,
    Counter,
    Csr,
    Fault,
    MmuConfig,
    Op,
    Pte,
)

# -- the datasheet ---------------------------------------------------------------------------------------------


def test_committed_datasheet_is_what_the_generator_writes_now():
    assert DATASHEET.read_text() == datasheet_text(), (
        "docs/datasheet.md is stale: run `python -m cosim.toolchain.datasheet` and commit it")


def test_datasheet_names_every_port_op_fault_csr_and_counter_with_its_number():
    text = datasheet_text()
    inputs = {**PORTS_IN, **AXI_PORTS_IN}  # a --memory axi build's ports are in every datasheet, in their section
    for name, width in {**inputs, **PORTS_OUT, **AXI_PORTS_OUT}.items():
        assert f"| `{name}` | {'input' if name in inputs else 'output'} | {width} |" in text
        assert name in PORT_DOCS, f"port {name} has no description in cosim/toolchain/datasheet.py"
    for op in Op:
        assert f"| {op.value} | {op.name} |" in text
    for fault in Fault:
        assert f"| {fault.value} | {fault.name} |" in text
    for csr in Csr:
        if csr != Csr.COUNTER_BASE:
            assert f"| 0x{csr.value:X} | {csr.name} |" in text
    for counter in Counter:
        assert f"| 0x{Csr.COUNTER_BASE + counter:X} | COUNTER_BASE + {counter.value}: {counter.name} |" in text


def test_datasheet_of_a_configuration_reads_its_values():
    text = datasheet_text(MmuConfig(tlb_entries=8, tlb_ways=2, mem_latency=2, mem_bytes=1 << 16, maxphyaddr=36))
    assert "in this configuration **2** | 2 |" in text  # CFG_TLB_WAYS, and CFG_MEM_LATENCY
    assert "bits 36..51 are reserved" in text and "| L = 2 |" in text


# -- the cycle table, measured on the RTL (MyHDL) ---------------------------------------------------------------

RAM = 1 << 20
BEYOND = RAM  # the first physical address outside RAM
# Entries with A set, so that a walk writes nothing back unless a row asks for it (each write-back has its row).
TABLE = Pte.PRESENT | Pte.WRITABLE | Pte.USER_ACCESSIBLE | Pte.ACCESSED
LEAF = Pte.PRESENT | Pte.WRITABLE | Pte.ACCESSED
VA = 0x0000_0080_0000_0000  # PML4 slot 1; +0x1000 shares its PT, +0x20_0000 its PD, +0x4000_0000 its PDPT


class Rig:
    """The myhdl backend with fresh page tables per scenario, and `timed`: the cycles of one operation, as the
    difference of ev_cycle with the operation before it (back to back)."""

    def __init__(self, latency: int) -> None:
        self.sim = open_backend("myhdl", MmuConfig(mem_bytes=RAM, mem_latency=latency), trace=True)
        self.frames = iter(range(0x1_0000, RAM, 0x1000))
        self.pml4 = 0

    def op(self, op: int, addr: int, size: int = 3, wdata: int = 0, user: bool = False) -> AccessEvent:
        self.sim.transact(op, addr, size, wdata, user, False)
        (event,) = self.sim.drain_events()
        return event

    def timed(self, op: int, addr: int, wdata: int = 0, user: bool = False, size: int = 3) -> tuple[int, AccessEvent]:
        before = self.op(Op.CSR_READ, Csr.CR2)
        event = self.op(op, addr, size, wdata, user)
        return event.cycle - before.cycle, event

    def fresh_tables(self) -> None:
        """Paging off, a new empty PML4 (CR3 written, so the PWC is empty too); paging stays off until `enable`."""
        self.op(Op.CSR_WRITE, Csr.CR0, 3, 0)
        self.pml4 = next(self.frames)
        self.op(Op.CSR_WRITE, Csr.CR3, 3, self.pml4)

    def map(self, vaddr: int, frame: int, leaf: int = LEAF, table: int = TABLE, outside_at: int = 0) -> None:
        """Map the 4 KiB page at `vaddr` (paging off), creating tables; `outside_at` = level whose table is made to
        lie outside RAM (its parent entry points beyond RAM)."""
        table_addr = self.pml4
        for level in (4, 3, 2):
            slot = table_addr + 8 * ((vaddr >> (12 + 9 * (level - 1))) & 511)
            entry = self.op(Op.LOAD, slot).data
            if not entry & Pte.PRESENT:
                child = BEYOND if outside_at == level - 1 else next(self.frames)
                entry = child | table
                self.op(Op.STORE, slot, 3, entry)
            table_addr = entry & ~0xFFF
            if table_addr >= RAM:
                return
        self.op(Op.STORE, table_addr + 8 * ((vaddr >> 12) & 511), 3, frame | leaf)

    def enable(self) -> None:
        self.op(Op.CSR_WRITE, Csr.CR0, 3, CR0_PG)


def _control(rig: Rig) -> Iterator[tuple[int, int]]:
    rig.fresh_tables()
    rig.map(VA, 0x8000, LEAF)  # supervisor only
    rig.map(VA + 0x1000, BEYOND)  # a frame outside RAM
    yield 0, rig.timed(Op.LOAD, BEYOND)[0]  # BUS with paging off
    rig.enable()
    for op, addr, wdata in ((Op.CSR_READ, Csr.CR3, 0), (Op.CSR_WRITE, Csr.CR2, 5), (Op.INVLPG, VA, 0),
                            (Op.FLUSH, 0, 0), (Op.LOAD, 1 << 50, 0), (Op.LOAD, VA + 4, 0)):
        yield 0, rig.timed(op, addr, wdata)[0]  # ... a non-canonical GP, a misaligned ALIGN
    rig.op(Op.LOAD, VA)  # cached
    cycles, event = rig.timed(Op.LOAD, VA, user=True)
    assert (event.fault, event.tlb_hit) == (Fault.PAGE, True)
    yield 0, cycles
    rig.op(Op.LOAD, VA + 0x1000)  # walks, BUS, and the translation stays
    cycles, event = rig.timed(Op.LOAD, VA + 0x1000)
    assert (event.fault, event.tlb_hit) == (Fault.BUS, True)
    yield 0, cycles


def _load_hit(rig: Rig) -> Iterator[tuple[int, int]]:
    rig.fresh_tables()
    rig.map(VA, 0x8000)
    yield 0, rig.timed(Op.LOAD, 0x8000)[0]  # paging off
    rig.enable()
    rig.op(Op.LOAD, VA)
    cycles, event = rig.timed(Op.LOAD, VA, size=2)
    assert event.tlb_hit
    yield 0, cycles


def _store_hit(rig: Rig) -> Iterator[tuple[int, int]]:
    rig.fresh_tables()
    rig.map(VA, 0x8000)
    yield 0, rig.timed(Op.STORE, 0x8000, 1)[0]  # paging off
    rig.enable()
    rig.op(Op.STORE, VA, 1)  # walks and sets D
    cycles, event = rig.timed(Op.STORE, VA, 2)
    assert event.tlb_hit and not event.walk_levels
    yield 0, cycles


_SHARING = {4: 0, 3: 0x4000_0000, 2: 0x20_0000, 1: 0x1000}  # offset from VA of a page whose walk reads n entries


def _miss(op: Op) -> Callable[[Rig], Iterator[tuple[int, int]]]:
    def scenario(rig: Rig) -> Iterator[tuple[int, int]]:
        rig.fresh_tables()
        for offset in _SHARING.values():
            rig.map(VA + offset, 0x8000, LEAF | Pte.DIRTY)  # (a store's leaf already dirty: no write-back)
        rig.enable()
        for n, offset in _SHARING.items():  # n = 4 first: its walk fills the PWC the others start from
            cycles, event = rig.timed(op, VA + offset, 1)
            assert (event.fault, event.walk_levels, event.pwc_hits, event.ad_writes) == (Fault.NONE, n, n < 4, 0)
            yield n, cycles

    return scenario


def _store_rewalk(rig: Rig) -> Iterator[tuple[int, int]]:
    rig.fresh_tables()
    rig.map(VA, 0x8000)
    rig.map(VA + 0x1000, 0x9000)
    rig.enable()
    rig.op(Op.LOAD, VA)  # cached with D clear
    rig.op(Op.INVLPG, VA + 0x1000)  # another page: the PWC empties, VA's entry stays
    cycles, event = rig.timed(Op.STORE, VA, 1)
    assert (event.tlb_hit, event.walk_levels) == (True, 4)
    yield 4, cycles
    rig.op(Op.LOAD, VA + 0x1000)
    cycles, event = rig.timed(Op.STORE, VA + 0x1000, 1)
    assert (event.tlb_hit, event.walk_levels) == (True, 1)
    yield 1, cycles


def _walk_page_fault(rig: Rig) -> Iterator[tuple[int, int]]:
    rig.fresh_tables()
    rig.map(VA, 0, leaf=0)  # a PTE without P
    rig.enable()
    for n, addr in ((4, VA), (1, VA + (1 << 39))):  # ... and a PML4 entry without P
        rig.op(Op.FLUSH, 0)
        cycles, event = rig.timed(Op.LOAD, addr)
        assert (event.fault, event.walk_levels) == (Fault.PAGE, n)
        yield n, cycles


def _walk_bus(rig: Rig) -> Iterator[tuple[int, int]]:
    rig.fresh_tables()
    rig.map(VA, 0x8000, outside_at=1)  # the PT lies outside RAM: entry 4 is read there
    rig.enable()
    cycles, event = rig.timed(Op.LOAD, VA)
    assert (event.fault, event.walk_levels) == (Fault.BUS, 4)
    yield 4, cycles
    rig.op(Op.CSR_WRITE, Csr.CR3, 3, BEYOND)
    cycles, event = rig.timed(Op.LOAD, VA)
    assert (event.fault, event.walk_levels) == (Fault.BUS, 1)
    yield 1, cycles


def _walk_then_bus(rig: Rig) -> Iterator[tuple[int, int]]:
    rig.fresh_tables()
    rig.map(VA, BEYOND)
    rig.enable()
    cycles, event = rig.timed(Op.LOAD, VA)
    assert (event.fault, event.walk_levels, event.tlb_miss) == (Fault.BUS, 4, True)
    yield 4, cycles


def _ad_write(rig: Rig) -> Iterator[tuple[int, int]]:
    measured = []
    for accessed in (Pte.ACCESSED, 0):
        rig.fresh_tables()
        rig.map(VA, 0x8000, LEAF & ~Pte.ACCESSED | accessed, TABLE & ~Pte.ACCESSED | accessed)
        rig.enable()
        cycles, event = rig.timed(Op.LOAD, VA)
        assert event.ad_writes == (0 if accessed else 4)
        measured.append(cycles)
    assert (measured[1] - measured[0]) % 4 == 0, "four write-backs cost four times one"
    yield 0, (measured[1] - measured[0]) // 4


SCENARIOS: dict[str, Callable[[Rig], Iterator[tuple[int, int]]]] = {
    "control": _control, "load_hit": _load_hit, "store_hit": _store_hit, "load_miss": _miss(Op.LOAD),
    "store_miss": _miss(Op.STORE), "store_rewalk": _store_rewalk, "walk_page_fault": _walk_page_fault,
    "walk_bus": _walk_bus, "walk_then_bus": _walk_then_bus, "ad_write": _ad_write,
}  # fmt: skip


@pytest.mark.rtl
@pytest.mark.parametrize("latency", [1, 3])
def test_every_row_of_the_datasheets_cycle_table_is_what_the_rtl_takes(latency: int):
    assert {row.key for row in CYCLE_TABLE} == set(SCENARIOS), "a cycle-table row without a measurement"
    rig = Rig(latency)
    try:
        for row in CYCLE_TABLE:
            measured = list(SCENARIOS[row.key](rig))
            if row.walk_entries:
                assert {n for n, _ in measured} == set(row.walk_entries), row.key
            for n, cycles in measured:
                assert cycles == row.cycles(latency, n), f"{row.case}: n = {n}, L = {latency}: measured {cycles}"
    finally:
        rig.sim.close()


# -- the RAM's initial contents and --ram-init ------------------------------------------------------------------


def test_ram_init_reads_readmemh_words_and_address_jumps(tmp_path: Path):
    init = tmp_path / "init.hex"
    init.write_text("// page tables\n0000000000002003\n@10 deadbeef_cafef00d // word 16\n0\n@4\n7\n/* done */\n")
    assert read_ram_init(init, 32) == {0: 0x2003, 16: 0xDEADBEEF_CAFEF00D, 4: 7}
    init.write_text("@20\n1\n")
    with pytest.raises(RamInitError, match="word 0x20 is beyond the RAM's 32 words"):
        read_ram_init(init, 32)
    init.write_text("12345678123456789\n")
    with pytest.raises(RamInitError, match="wider than a 64-bit word"):
        read_ram_init(init, 32)
    init.write_text("xyz\n")
    with pytest.raises(RamInitError, match=r"init\.hex:1: not a hex word"):
        read_ram_init(init, 32)


PRELOAD_BENCH = """`timescale 1ns/1ps
module preload_tb;
    reg clk = 1'b0, rst = 1'b1, req_valid = 1'b0;
    reg [63:0] req_addr = 64'd0;
    wire req_ready, resp_valid;
    wire [63:0] resp_rdata;
    always #5 clk = ~clk;
    mmu dut (.clk(clk), .rst(rst), .req_valid(req_valid), .req_op(3'd0), .req_size(2'd3), .req_user(1'b0),
             .req_fetch(1'b0), .req_addr(req_addr), .req_wdata(64'd0), .req_ready(req_ready),
             .resp_valid(resp_valid), .resp_rdata(resp_rdata), .resp_fault(), .resp_errcode(), .ev_cycle(),
             .ev_paddr(), .ev_tlb_hit(), .ev_tlb_miss(), .ev_evict(), .ev_evict_vpn(), .ev_walk_levels(),
             .ev_walk_cycles(), .ev_pwc_hits(), .ev_ad_writes());
    task load(input [63:0] addr);
        begin
            req_valid <= 1'b1; req_addr <= addr;
            @(posedge clk); while (!req_ready) @(posedge clk);
            req_valid <= 1'b0;
            @(posedge clk); while (!resp_valid) @(posedge clk);
            $display("%h %h", addr, resp_rdata);
        end
    endtask
    initial begin
        repeat (2) @(posedge clk);
        rst <= 1'b0;
        load(64'h0); load(64'h80); load(64'h88); load(64'hff8);
        $finish;
    end
endmodule
"""


@pytest.mark.rtl
def test_preloaded_words_are_read_back_and_the_rest_reads_zero_on_icarus(tmp_path: Path):
    if not shutil.which("iverilog"):
        pytest.skip("iverilog is not installed")
    init = tmp_path / "init.hex"
    init.write_text("0123456789abcdef\n@10\nfeedface00000001\n")
    config = MmuConfig(mem_bytes=1 << 16, tlb_entries=4, pwc_entries=0)
    mmu_v = write_kit(config, tmp_path / "build", ram_init=init)[0]
    lint(mmu_v)
    bench = tmp_path / "preload_tb.v"
    bench.write_text(PRELOAD_BENCH)
    subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "tb"), str(mmu_v), str(bench)], check=True)
    out = subprocess.run(["vvp", "-n", str(tmp_path / "tb")], capture_output=True, text=True, check=True).stdout
    words = dict(line.split() for line in out.splitlines() if len(line.split()) == 2)
    assert words == {"0000000000000000": "0123456789abcdef", "0000000000000080": "feedface00000001",
                     "0000000000000088": "0000000000000000", "0000000000000ff8": "0000000000000000"}


# -- the kit and its FuseSoC core -------------------------------------------------------------------------------


def _fusesoc(kit: Path, work: Path, target: str) -> subprocess.CompletedProcess[str]:
    fusesoc = Path(sys.executable).with_name("fusesoc")
    if not fusesoc.exists():
        pytest.skip("fusesoc is not installed (pip install -e '.[dev]')")
    work.mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(fusesoc), "--cores-root", str(kit), "run", "--build-root", str(work / "fusesoc"),
                           "--target", target, CORE_NAME], capture_output=True, text=True, cwd=work,
                          env={**build.verilator_env(), "PYTHONWARNINGS": "ignore"}, check=False)


@pytest.mark.rtl
def test_fusesoc_lint_target_runs_verilator_wall_on_the_exported_core(tmp_path: Path):
    kit = write_kit(MmuConfig(mem_bytes=1 << 16, tlb_entries=4, tlb_ways=2), tmp_path / "build")
    assert [p.name for p in kit] == ["mmu.v", "mmu_tb.v", "mmu.core", "datasheet.md"]
    core = kit[2].read_text()
    assert core.startswith("CAPI=2:") and "tlb_ways=2" in core and "e4w2plru_p8_m64K_l1_pa40" in core
    result = _fusesoc(kit[0].parent, tmp_path, "lint")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    # and it does fail on a warning
    text = kit[0].read_text()
    kit[0].write_text(text.replace("endmodule", "wire [3:0] too_narrow = 5'd17;\nendmodule"))
    assert _fusesoc(kit[0].parent, tmp_path / "bad", "lint").returncode != 0


@pytest.mark.rtl
def test_fusesoc_sim_target_runs_the_kits_testbench_on_icarus(tmp_path: Path):
    if not shutil.which("iverilog"):
        pytest.skip("iverilog is not installed")
    kit = write_kit(MmuConfig(mem_bytes=1 << 16, tlb_entries=4, pwc_entries=2, mem_latency=2), tmp_path / "build")
    result = _fusesoc(kit[0].parent, tmp_path, "sim")
    assert result.returncode == 0 and "PASS" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.rtl
def test_fusesoc_sim_verilator_target_runs_the_same_testbench_on_verilator(tmp_path: Path):
    # About 20 s: Verilator --binary (timing) compiles the bench and the MMU; both are -Wall clean.
    kit = write_kit(MmuConfig(mem_bytes=1 << 16, tlb_entries=4, pwc_entries=0, mem_latency=3), tmp_path / "build")
    result = _fusesoc(kit[0].parent, tmp_path, "sim_verilator")
    assert result.returncode == 0 and "PASS" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]


def test_verilog_command_writes_the_kit_and_says_so(tmp_path: Path, capsys):
    from cosim.cli import main

    assert main(["verilog", "--tlb-entries", "4", "--mem-bytes", "64K", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    directory = tmp_path / "verilog" / "e4w4plru_p8_m64K_l1_pa40"
    for name in ("mmu.v", "mmu_tb.v", "mmu.core", "datasheet.md"):
        assert (directory / name).is_file() and name in out
    assert os.path.getsize(directory / "datasheet.md") > 10_000
