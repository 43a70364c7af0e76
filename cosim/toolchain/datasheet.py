"""The datasheet of the exported `mmu`, generated from hdl/protocol.py (ports, encodings, CSRs, counters, PTE bits)
and a configuration: `docs/datasheet.md` is this text for MmuConfig(), and `mmucosim verilog` writes one for its
configuration beside `mmu.v`.

    python -m cosim.toolchain.datasheet            rewrite docs/datasheet.md
    python -m cosim.toolchain.datasheet --check    exit 1 if docs/datasheet.md is stale (CI: tests/test_kit.py)

Everything numeric comes from hdl.protocol, so a new op, fault, CSR, counter or port shows up here by itself.
Ports are grouped by name prefix (PORT_GROUPS); a group nobody described yet (an AXI port, say) still gets a table.
The cycle table (CYCLE_TABLE) is the one claim that is not read from the protocol: tests/test_kit.py measures
every row on the RTL.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

from cosim.backends.handshake import RESET_CYCLES
from cosim.toolchain.export import RAM_NO_INIT_DEFINE, config_tag
from hdl.interfaces import ram_banks
from hdl.protocol import (
    AXI_PREFIX,
    BRAM_PORT_REGISTERS,
    CR0_PE,
    CR0_PG,
    CR0_PG_BIT,
    CR0_WP,
    CSR_ADDR_WIDTH,
    DATA_WIDTH,
    HUGE_1G_RESERVED,
    HUGE_2M_RESERVED,
    LFSR_SEED,
    LFSR_TAPS,
    PORTS_IN,
    PRIVILEGED_OPS,
    Counter,
    Csr,
    ErrorCode,
    Fault,
    MmuConfig,
    Op,
    Pte,
    TlbPolicy,
    top_port_widths,
)

DATASHEET = Path(__file__).resolve().parents[2] / "docs" / "datasheet.md"

# -- ports -------------------------------------------------------------------------------------------------------

# (prefix, section title, what the group is for). A port belongs to the first group whose prefix it starts with.
PORT_GROUPS = (
    ("", "Clock and reset", "", ("clk", "rst")),
    ("req_", "Request", "The CPU's operation, held from req_valid until a rising edge samples req_ready = 1.", ()),
    ("resp_", "Response", "Valid in the one cycle resp_valid is high.", ()),
    ("ev_", "Access event", "What the TLB and the walker did for the operation; valid with resp_valid.", ()),
    ("m_axi_", "AXI4 memory port", "The AXI4 manager port of a `--memory axi` build, which has it instead of the "
     "RAM inside the mmu (a `--memory bram` build has none of these ports). Addresses are MAXPHYADDR bits wide, "
     "IDs `--axi-id-width` bits; one transfer is in flight at a time, a single 8-byte beat. docs/hardware.md "
     "gives the transfers, AxPROT and the cycle costs against the subordinate's latency.", ()),
)

PORT_DOCS = {
    "clk": "clock; everything happens at its rising edge",
    "rst": f"reset: synchronous, active high; hold it for at least one rising edge ({RESET_CYCLES} recommended)",
    "req_valid": "a request is presented",
    "req_op": "the operation: an `Op` code (below)",
    "req_size": "LOAD/STORE access size, log2 of bytes: 0 = 1, 1 = 2, 2 = 4, 3 = 8 bytes; ignored by other ops",
    "req_user": "the access is from user mode (CPL 3): U-bit checks; INVLPG, FLUSH and CSR ops are GP",
    "req_fetch": "the LOAD is an instruction fetch (NX applies, error code I); ignored by other ops",
    "req_addr": "LOAD/STORE/INVLPG: the virtual address (physical with paging off); CSR ops: the CSR number",
    "req_wdata": "STORE: the data, in its low `1 << req_size` bytes; CSR_WRITE: the value",
    "req_ready": "the MMU takes a request at this rising edge; from registers only (never from req_*)",
    "resp_valid": "one-cycle pulse: the operation's response and access event",
    "resp_rdata": "LOAD: the data, zero-extended; CSR_READ: the register; 0 otherwise and on any fault",
    "resp_fault": "how the operation ended: a `Fault` code (below)",
    "resp_errcode": "PAGE faults: the x86 error code (`ErrorCode` bits, below); 0 otherwise",
    "ev_cycle": "the value of Counter.CYCLES (rising edges since reset) in this cycle",
    "ev_paddr": "the physical address the data access used; 0 when the operation faulted or made none",
    "ev_tlb_hit": "the TLB lookup hit (LOAD/STORE with paging on only)",
    "ev_tlb_miss": "the TLB lookup missed (so the MMU walked)",
    "ev_evict": "the walk's fill replaced a valid TLB entry ...",
    "ev_evict_vpn": "... whose virtual page number (of its base, in 4 KiB pages) this is",
    "ev_walk_levels": "page-table entries the walk read, 1..4 (0: no walk)",
    "ev_walk_cycles": "the walker's cycles: n·(2 + R) for n entries, plus one per write-back (see the cycle table)",
    "ev_pwc_hits": "1 when the walk started from a paging-structure-cache entry, else 0",
    "ev_ad_writes": "page-table entries the walk wrote back to set A (or A and D)",
    **{f"{AXI_PREFIX}_{name}": text for name, text in (
        ("awid", "write address ID: always 0"),
        ("awaddr", "write address: the physical address of the 8-byte word (bits 2..0 zero)"),
        ("awlen", "burst length - 1: always 0 (one beat)"),
        ("awsize", "beat size: always 3 (8 bytes)"),
        ("awburst", "burst type: always 1 (INCR)"),
        ("awprot", "protection: bit 0 privileged (walker write-backs; stores with req_user = 0), bit 1 non-secure "
                   "(always 1), bit 2 instruction (always 0 for writes)"),
        ("awvalid", "a write address is presented; held with its payload until awready"),
        ("awready", "the subordinate takes the write address"),
        ("wdata", "write data: the store's bytes in their lanes of the 8-byte word (little endian)"),
        ("wstrb", "write strobes: one per byte lane written"),
        ("wlast", "last beat: always 1"),
        ("wvalid", "write data is presented; held until wready (before, with or after the address)"),
        ("wready", "the subordinate takes the write data"),
        ("bid", "write response ID (must be 0: else BUS)"),
        ("bresp", "write response: OKAY (0) ends the write; anything else ends the operation with Fault.BUS"),
        ("bvalid", "a write response is presented"),
        ("bready", "the MMU takes the write response: high while a write waits for it"),
        ("arid", "read address ID: always 0"),
        ("araddr", "read address: the physical address of the 8-byte word (bits 2..0 zero)"),
        ("arlen", "burst length - 1: always 0 (one beat)"),
        ("arsize", "beat size: always 3 (8 bytes)"),
        ("arburst", "burst type: always 1 (INCR)"),
        ("arprot", "protection: bit 0 privileged (page-table reads; loads with req_user = 0), bit 1 non-secure "
                   "(always 1), bit 2 instruction (req_fetch loads)"),
        ("arvalid", "a read address is presented; held with its payload until arready"),
        ("arready", "the subordinate takes the read address"),
        ("rid", "read data ID (must be 0: else BUS)"),
        ("rdata", "read data: the 8-byte word (little endian)"),
        ("rresp", "read response: OKAY (0) delivers the word; anything else ends the operation with Fault.BUS"),
        ("rlast", "last beat (must be 1: else BUS)"),
        ("rvalid", "read data is presented"),
        ("rready", "the MMU takes the read data: high while a read waits for it"),
    )},
}


def _port_groups(config: MmuConfig) -> list[tuple[str, str, list[tuple[str, str, int]]]]:
    """(title, note, [(name, direction, width)]) per group, in PORT_GROUPS order, then any ports left over: every
    port of `config` in either memory build (the groups' notes say which build has which)."""
    inputs, outputs = top_port_widths(replace(config, memory="axi"))
    ports = [(name, "input", width) for name, width in inputs.items()]
    ports += [(name, "output", width) for name, width in outputs.items()]
    groups: list[tuple[str, str, list[tuple[str, str, int]]]] = []
    taken: set[str] = set()
    for prefix, title, note, names in PORT_GROUPS:
        members = [p for p in ports if p[0] not in taken and (p[0] in names if names else
                                                               prefix and p[0].startswith(prefix))]
        taken |= {p[0] for p in members}
        groups.append((title, note, members))
    rest = [p for p in ports if p[0] not in taken]
    if rest:
        groups.append(("Other ports", "", rest))
    return groups


# -- the cycle table ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CycleRow:
    """One case of the cycle table: cycles from the rising edge that accepts the request to the resp_valid cycle,
    as a function of the memory latency L and the page-table entries n the walk reads (n is None: no walk)."""

    key: str  # the name tests/test_kit.py measures it by
    case: str
    formula: str
    cycles: Callable[[int, int], int]
    walk_entries: tuple[int, ...] = ()  # the values of n the case has (and the test measures)


def _read(L: int) -> int:
    """R: cycles from a read request to its word, for the RAM's latency L (MmuConfig.bram_read_cycles)."""
    return L + BRAM_PORT_REGISTERS


CYCLE_TABLE = (
    CycleRow("control", "CSR_READ, CSR_WRITE, INVLPG, FLUSH; a fault found before any walk (GP, ALIGN, PAGE on a "
             "TLB hit, BUS on a TLB hit or with paging off)", "2", lambda L, n: 2),
    CycleRow("load_hit", "LOAD, paging off or TLB hit", "2 + R", lambda L, n: 2 + _read(L)),
    CycleRow("store_hit", "STORE, paging off or TLB hit on an entry with D set", "2", lambda L, n: 2),
    CycleRow("load_miss", "LOAD, TLB miss: a walk reading n entries (n = 4 from CR3; 3, 2, 1 after a PWC hit on a "
             "PML4E, PDPTE, PDE)", "4 + n·(2 + R) + R", lambda L, n: 4 + n * (2 + _read(L)) + _read(L),
             (4, 3, 2, 1)),
    CycleRow("store_miss", "STORE, TLB miss (walk of n entries; the leaf's D already set)", "4 + n·(2 + R)",
             lambda L, n: 4 + n * (2 + _read(L)), (4, 3, 2, 1)),
    CycleRow("store_rewalk", "STORE, TLB hit on an entry with D clear: a re-walk of n entries sets D (its "
             "write-back included)", "5 + n·(2 + R)", lambda L, n: 5 + n * (2 + _read(L)), (4, 1)),
    CycleRow("walk_page_fault", "walk ending in a page fault at entry n (not present, reserved bit, or permission at "
             "the leaf)", "4 + n·(2 + R)", lambda L, n: 4 + n * (2 + _read(L)), (4, 1)),
    CycleRow("walk_bus", "walk ending in BUS because entry n lies outside RAM (n = 1: CR3 outside RAM)",
             "5 + (n − 1)·(2 + R)", lambda L, n: 5 + (n - 1) * (2 + _read(L)), (4, 1)),
    CycleRow("walk_then_bus", "walk succeeds, then the data access faults BUS (the frame lies outside RAM; the "
             "translation stays cached)", "4 + n·(2 + R)", lambda L, n: 4 + n * (2 + _read(L)), (4,)),
    CycleRow("ad_write", "each A or A/D write-back during a walk", "+ 1", lambda L, n: 1),
)


def _cycle_table(config: MmuConfig) -> str:
    latencies = sorted({1, 3, config.mem_latency})
    header = "| case | cycles | " + " | ".join(f"L = {L}" for L in latencies) + " |"
    lines = [header, "|" + "---|" * (2 + len(latencies))]
    for row in CYCLE_TABLE:
        cells = []
        for L in latencies:
            if row.walk_entries:
                cells.append(", ".join(f"{row.cycles(L, n)} (n = {n})" for n in row.walk_entries))
            else:
                cells.append(("+ " if row.key == "ad_write" else "") + str(row.cycles(L, 0)))
        lines.append(f"| {row.case} | {row.formula} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- the text ------------------------------------------------------------------------------------------------------


def _hex(value: int) -> str:
    return f"0x{value:X}"


def _csr_rows(config: MmuConfig) -> list[str]:
    notes = {
        Csr.CR0: f"RW | PG (bit {CR0_PG_BIT}) turns paging on; PE (bit 0) and WP (bit 16) read as 1, writes ignore "
                 f"every bit but PG. A write that changes PG empties the TLB and the PWC | {_hex(CR0_PE | CR0_WP)}",
        Csr.CR2: "RW | the linear address of the last page fault; writable, as `mov cr2` allows | 0",
        Csr.CR3: "RW | all 64 bits read back as written; the walk uses bits 12..M−1 (the PML4's physical address). "
                 "A write empties the PWC and drops non-global TLB entries, and counts in FLUSHES | 0",
        Csr.PFEC: "RO | the error code of the last page fault (x86 pushes it on the stack) | 0",
    }
    rows = []
    for csr in Csr:
        if csr == Csr.COUNTER_BASE:
            continue
        if csr in notes:
            access, text, reset = notes[csr].split(" | ")
        else:
            value = config.csr_value(csr)
            shown = f"{TlbPolicy(value).name} = {value}" if csr == Csr.CFG_TLB_POLICY else str(value)
            meaning = {
                Csr.CFG_TLB_ENTRIES: "TLB entries",
                Csr.CFG_TLB_WAYS: "TLB associativity: ways per set, the *effective* one (a fully associative TLB, "
                                  "`--tlb-ways 0`, reads its entry count; sets = entries / ways)",
                Csr.CFG_TLB_POLICY: "replacement policy: " + ", ".join(f"{p.value} = {p.name}" for p in TlbPolicy),
                Csr.CFG_PWC_ENTRIES: "paging-structure-cache entries (0: none)",
                Csr.CFG_MEM_BYTES: "bytes of RAM",
                Csr.CFG_MAXPHYADDR: "MAXPHYADDR (M): physical address bits",
                Csr.CFG_MEM_LATENCY: "RAM read latency L in cycles",
            }.get(csr, "configuration")
            access, text, reset = "RO", f"{meaning}; in this configuration **{shown}**", shown
        rows.append(f"| {_hex(csr)} | {csr.name} | {access} | {text} | {reset} |")
    for counter in Counter:
        rows.append(f"| {_hex(Csr.COUNTER_BASE + counter)} | COUNTER_BASE + {counter.value}: {counter.name} | RO | "
                    f"{_COUNTER_DOCS.get(counter, 'performance counter')} | 0 |")
    return rows


_COUNTER_DOCS = {
    Counter.CYCLES: "rising edges since reset (the value ev_cycle shows)",
    Counter.LOADS: "LOADs that completed without fault",
    Counter.STORES: "STOREs that completed without fault",
    Counter.TLB_HITS: "TLB lookups that hit (ev_tlb_hit)",
    Counter.TLB_MISSES: "TLB lookups that missed (ev_tlb_miss)",
    Counter.TLB_EVICTIONS: "fills that replaced a valid entry (ev_evict)",
    Counter.WALKS: "walks, re-walks for D included (ev_walk_levels > 0)",
    Counter.WALK_CYCLES: "the sum of ev_walk_cycles",
    Counter.PTE_READS: "the sum of ev_walk_levels",
    Counter.PWC_HITS: "the sum of ev_pwc_hits",
    Counter.AD_WRITES: "the sum of ev_ad_writes",
    Counter.INVLPGS: "INVLPGs executed (a non-canonical no-op counts; a GP one does not)",
    Counter.FLUSHES: "FLUSH ops and CR3 writes that executed",
    Counter.FAULTS_PAGE: "responses with Fault.PAGE",
    Counter.FAULTS_GP: "responses with Fault.GP",
    Counter.FAULTS_ALIGN: "responses with Fault.ALIGN",
    Counter.FAULTS_BUS: "responses with Fault.BUS",
}

_OP_DOCS = {
    Op.LOAD: "read `1 << req_size` bytes at req_addr into resp_rdata (zero-extended)",
    Op.STORE: "write the low `1 << req_size` bytes of req_wdata at req_addr",
    Op.INVLPG: "drop every TLB entry whose page holds req_addr (global ones too, in every set) and empty the PWC; "
               "a non-canonical address is a no-op",
    Op.FLUSH: "drop every TLB entry, global ones too, and empty the PWC (req_addr ignored)",
    Op.CSR_READ: "resp_rdata = CSR[req_addr] (64 bits)",
    Op.CSR_WRITE: "CSR[req_addr] = req_wdata (64 bits)",
}

_FAULT_DOCS = {
    Fault.NONE: "completed",
    Fault.PAGE: "page fault (#PF): CR2 = req_addr, PFEC = resp_errcode; no TLB entry is left for the address",
    Fault.GP: "general protection (#GP): a non-canonical address with paging on, a CSR that does not exist or is "
              "read-only (writes), an undefined op (6, 7), or a privileged op from user mode; CR2 unchanged",
    Fault.ALIGN: "the address is not a multiple of the access size; CR2 unchanged",
    Fault.BUS: "a physical address at or beyond the RAM: the data access, or a page-table entry the walk reads; CR2 "
               "unchanged",
}

_ERRCODE_DOCS = {
    "P": "0: the entry was not present; 1: a protection or reserved-bit violation",
    "W": "the access was a STORE",
    "U": "the access was from user mode (req_user)",
    "RSVD": "a reserved bit was set in an entry the walk read",
    "I": "the access was an instruction fetch (req_fetch on a LOAD)",
}

_PTE_DOCS = {
    "PRESENT": "P: the entry is valid",
    "WRITABLE": "W: stores allowed (all levels must allow; supervisor too, as CR0.WP = 1)",
    "USER_ACCESSIBLE": "U: user accesses allowed (all levels must allow)",
    "WRITE_THROUGH": "PWT: kept, not used",
    "NO_CACHE": "PCD: kept, not used",
    "ACCESSED": "A: set by the walker in every entry it uses",
    "DIRTY": "D: set by the walker in the leaf on a STORE",
    "HUGE_PAGE": "PS: a 1 GiB leaf in a PDPTE, a 2 MiB leaf in a PDE; reserved in a PML4E; PAT in a PTE",
    "GLOBAL": "G: in a leaf, the translation survives CR3 writes",
    "NO_EXECUTE": "NX: instruction fetches not allowed (any level)",
}


def _bit(mask: int) -> int:
    return mask.bit_length() - 1


def _bit_constants(namespace: type) -> list[tuple[str, int]]:
    """The single-bit constants of a namespace class (Pte, ErrorCode), by name, in the order it defines them."""
    return [(name, value) for name, value in vars(namespace).items()
            if isinstance(value, int) and not name.startswith("_")]


def datasheet_text(config: MmuConfig | None = None) -> str:
    """The datasheet of the `mmu` exported for `config` (default MmuConfig()), as Markdown."""
    config = config or MmuConfig()
    config.validate()
    m = config.maxphyaddr
    L = config.mem_latency
    out: list[str] = []
    add = out.append
    add("<!-- Generated by `python -m cosim.toolchain.datasheet` from hdl/protocol.py: do not edit by hand. -->")
    add(f"# `mmu` datasheet — configuration `{config_tag(config)}`\n")
    add("A synthesizable x86-64 memory-management unit with its own RAM: 4-level paging (4 KiB, 2 MiB and 1 GiB "
        "pages), a TLB, a hardware page walker that sets A and D, a paging-structure cache (PWC), control registers "
        "and performance counters. One Verilog module, `mmu`, in one file, `mmu.v` (Verilog-2001; also compiles with "
        "`iverilog -g2012` and is clean under `verilator --lint-only -Wall` without waivers). One clock, one "
        "synchronous reset, one operation at a time. Everything below is exact for this configuration; "
        "`mmucosim verilog` writes the same sheet for any other beside its `mmu.v`.\n")

    add("## Integration\n")
    add("`mmucosim verilog` writes, beside `mmu.v`: `mmu_tb.v`, a self-checking plain-Verilog testbench that uses "
        "only this sheet (reset, CSR reads, stores and loads, faults; prints PASS); `mmu.core`, a FuseSoC CAPI2 core "
        "(`fusesoc --cores-root DIR run --target lint|sim|sim_verilator|sim_no_init mmucosim:mmu:mmu`); and this "
        "sheet. By hand: `verilator --lint-only -Wall mmu.v`; `iverilog -g2012 -o tb mmu.v mmu_tb.v && vvp tb`; "
        "`verilator --binary -Wall --top-module mmu_tb -CFLAGS -std=c++20 mmu.v mmu_tb.v && obj_dir/Vmmu_tb`. "
        "For an FPGA: `mmucosim synth --target ecp5-85f` (or `ice40-up5k`) with this configuration's options "
        "synthesizes it with Yosys and nextpnr and reports its resources and Fmax; docs/synthesis.md has those "
        "measured for the default configuration on an ECP5-85F and for an 8-entry TLB on an iCE40UP5K.\n")
    add("## Configuration\n")
    add("Fixed at export (`mmucosim verilog --tlb-entries … --maxphyaddr …`); software reads it from the CFG_* CSRs.\n")
    add("| parameter | value |")
    add("|---|---|")
    for f in fields(MmuConfig):
        value = getattr(config, f.name)
        if f.name == "tlb_policy":
            value = TlbPolicy(value).name
        elif f.name == "tlb_ways":
            value = f"{config.ways}" + (" (fully associative: `--tlb-ways 0`)" if config.ways == config.tlb_entries
                                        else f" ({config.sets} sets)")
        elif f.name == "mem_bytes":
            value = f"{value} ({value >> 10} KiB)"
        add(f"| `{f.name}` | {value} |")
    add("")

    add("## Ports\n")
    add("All ports are plain `wire`s of the widths below, bit 0 the least significant. Inputs are sampled at the "
        "rising edge of `clk`; outputs change only just after it (every output comes from a register, or from "
        "registers through logic that does not look at any input). Inputs reach registers through logic: "
        "`req_addr`'s page number is compared with every TLB and PWC tag in the cycle that accepts the request "
        "(the comparison is registered with it), and `req_wdata` is shifted into its byte lanes, so drive them from "
        "registers and leave them most of the cycle (docs/synthesis.md has the paths and the Fmax they allow).\n")
    for title, note, members in _port_groups(config):
        add(f"### {title}\n")
        if note:
            add(note + "\n")
        if not members:
            add("*(none in this build: this section lists the ports when a configuration has them)*\n")
            continue
        add("| port | direction | width | description |")
        add("|---|---|---|---|")
        for name, direction, width in members:
            add(f"| `{name}` | {direction} | {width} | {PORT_DOCS.get(name, 'see hdl/protocol.py')} |")
        add("")

    add("## Reset\n")
    add(f"`rst` is synchronous and active high: at a rising edge of `clk` with `rst` = 1 every register takes its "
        f"reset value. One such edge is enough; the project's own drivers hold `rst` high for {RESET_CYCLES} edges "
        "and drop it while `clk` is low. Requests presented while `rst` is high are ignored. After reset:\n")
    add(f"- `req_ready` = 1 (idle), `resp_valid` = 0, CYCLES = 0 and counting every edge from the one that ends "
        f"reset;\n- CR0 = {_hex(CR0_PE | CR0_WP)} (PE and WP; PG = 0: paging off), CR2 = CR3 = PFEC = 0, every "
        f"counter 0;\n- the TLB and the PWC empty; the replacement state reset (PLRU bits 0, FIFO pointers 0, "
        f"the RANDOM LFSR = {_hex(LFSR_SEED)});\n- the RAM is **not** reset: it holds what it held. At time 0 "
        f"(power-up, simulation start) it is all zeros, or the words preloaded with "
        f"`mmucosim verilog --ram-init FILE` (see Memory for synthesis and `{RAM_NO_INIT_DEFINE}`).\n")

    add("## Handshake and timing\n")
    add("One operation at a time:\n")
    add("1. Present the request: `req_valid` = 1 with `req_op`, `req_size`, `req_user`, `req_fetch`, `req_addr`, "
        "`req_wdata`, and hold all of them until a rising edge samples `req_ready` = 1. That edge accepts it.")
    add("2. Drop `req_valid` (or present the next request) after that edge. Inputs may change at any time away "
        "from the rising edge; the project's drivers change them while `clk` is low.")
    add("3. `resp_valid` rises after a later edge, for exactly one cycle. In that cycle `resp_*` and `ev_*` hold "
        "the operation's response and access event; sample them at the rising edge that ends it. Outside it they "
        "are not defined (they keep the last values, but do not rely on it).")
    add("4. `req_ready` is 1 while idle and during the `resp_valid` cycle: a request presented then is accepted at "
        "the edge that ends the pulse, so back-to-back operations take exactly the cycles of the table below. "
        "`req_ready` comes from registers only: it may be sampled at the edge without waiting for the request's "
        "own inputs to settle.\n")
    add("For example, cycle by cycle (each column is the time between two rising edges), a 2-cycle operation A "
        "and the next one, B:\n")
    add("| cycle | 0 | 1 | 2 | 3 |")
    add("|---|---|---|---|---|")
    add("| `req_valid` | 1 (A) | 0 | 1 (B) | 0 or the next |")
    add("| `req_ready` | 1 | 0 | 1 | 0 |")
    add("| `resp_valid` | 0 | 0 | 1 (A's response) | 0 |")
    add("| MMU | idle: the edge ending the cycle accepts A | looks A up | responds to A; the edge ending the cycle "
        "accepts B | looks B up |")
    add("")

    add("## Operations (`req_op`)\n")
    add(f"{len(Op)} ops in a {PORTS_IN['req_op']}-bit field; the other codes are GP. "
        f"**Privileged**: {', '.join(op.name for op in PRIVILEGED_OPS)} with `req_user` = 1 are GP — as `invlpg` "
        "and `mov` to or from a control register are at CPL 3 on x86, reads included, for every CSR — and then "
        "change nothing (no TLB or PWC entry dropped, no CSR written, `resp_rdata` = 0, CR2 and PFEC kept, "
        "error code 0).\n")
    add("| code | op | does |")
    add("|---|---|---|")
    for op in Op:
        add(f"| {op.value} | {op.name} | {_OP_DOCS.get(op, '')} |")
    add("")
    add("`req_size` (LOAD and STORE): 0 = 1 byte, 1 = 2, 2 = 4, 3 = 8 bytes.\n")

    add("## Faults (`resp_fault`)\n")
    add("Checked in this order for a LOAD or STORE with paging on: non-canonical (GP), misaligned (ALIGN), TLB "
        "lookup and walk (PAGE, or BUS for an entry outside RAM), permissions (PAGE), physical address outside RAM "
        "(BUS), the access. With paging off: misaligned (ALIGN), outside RAM (BUS).\n")
    add("| code | fault | meaning |")
    add("|---|---|---|")
    for fault in Fault:
        add(f"| {fault.value} | {fault.name} | {_FAULT_DOCS.get(fault, '')} |")
    add("")
    add("`resp_errcode` (PAGE only; x86 page-fault error code, Intel SDM vol. 3A 4.7). W, U and I describe the "
        "access whatever the cause:\n")
    add("| bit | value | name | meaning |")
    add("|---|---|---|---|")
    for name, value in _bit_constants(ErrorCode):
        add(f"| {_bit(value)} | {_hex(value)} | {name} | {_ERRCODE_DOCS.get(name, '')} |")
    add("")

    add("## Control and status registers\n")
    add(f"CSR_READ and CSR_WRITE address a CSR by the whole 64-bit `req_addr` (bits 63..{CSR_ADDR_WIDTH} must be "
        f"0: 0x1000 is not CR0); every CSR is {DATA_WIDTH} bits. A read of an address not listed, a write of an "
        "RO one, and any CSR op from user mode are GP. A CSR read sees every earlier operation and not itself "
        "(counters count at the end of each response cycle).\n")
    add("| address | CSR | access | reads | reset |")
    add("|---|---|---|---|---|")
    add("\n".join(_csr_rows(config)))
    add("")
    add(f"**CFG_TLB_WAYS** reads the effective associativity, ways per set — {config.ways} here — not the "
        "`--tlb-ways` option: a fully associative TLB (`--tlb-ways 0`, the default) reads its entry count, as one "
        "set holds them all. Software that sizes sets as CFG_TLB_ENTRIES / CFG_TLB_WAYS gets 1, which is right, "
        "and needs no special case for 0; CPUID describes a fully associative TLB by its ways = entries too.\n")

    add("## Memory\n")
    add(f"- **RAM**: {config.mem_bytes} bytes ({config.mem_bytes >> 10} KiB) at physical addresses "
        f"0..{_hex(config.mem_bytes - 1)}, organised as {config.mem_bytes // 8} 64-bit words. A physical address "
        "at or beyond the RAM is a BUS fault. Nothing else is mapped: no I/O, no aliasing.")
    add("- **Little-endian**: byte `a` is bits `8·(a mod 8)` … `8·(a mod 8) + 7` of word `a / 8`; a 2-, 4- or "
        "8-byte access puts its lowest-addressed byte in bits 7..0 of `req_wdata` / `resp_rdata`.")
    add("- **Alignment**: an access must be naturally aligned (`req_addr` a multiple of `1 << req_size`), else "
        "ALIGN. So no access crosses a word or a page.")
    add(f"- **Latency**: the RAM itself reads in L = {L} cycle{'s' if L > 1 else ''} (`mem_latency`), behind "
        "registers that keep the block RAM off every other path (one for the request, and two for the word: beside "
        f"the RAM's {ram_banks(config.mem_bytes)} bank(s), and after the bank's word is chosen): a read's word is "
        f"ready R = L + {BRAM_PORT_REGISTERS} cycles after the cycle that requests it, and a write lands at the "
        "second edge after its request (a later read sees it).")
    add(f"- **Initial contents**: zeros. In simulation an `initial` loop in `mmu.v` zeroes every word (Icarus, "
        "Verilator, any simulator). Synthesis tools that define `SYNTHESIS` (Yosys does) skip the loop: a block RAM "
        "without initial values configures as zeros in ECP5 (DP16KD) and iCE40 (EBR) bitstreams, and only such a RAM "
        "maps to the iCE40 UltraPlus SPRAM (64 KiB on a UP5K), whose power-up contents are undefined: software "
        "must write before it reads there (page tables included). `mmucosim verilog --ram-init FILE` preloads "
        "words: `FILE` is `$readmemh` text, one 64-bit word in hex per line from word 0 up, `@hex` to jump to a "
        "word address, `//` comments. The preloaded words are explicit assignments after the loop, which "
        "simulators and Yosys both take (DP16KD/EBR initial values; an SPRAM cannot hold them). Define "
        f"`{RAM_NO_INIT_DEFINE}` (`-D{RAM_NO_INIT_DEFINE}`; FuseSoC target `sim_no_init`) to leave the RAM "
        "undefined in simulation too, as on the SPRAM.\n")

    add("## Paging\n")
    add("Off after reset: a LOAD or STORE then uses `req_addr` as the physical address (no canonical check, no "
        "TLB). To turn it on, build x86-64 4-level page tables in RAM (with paging off, by STOREs), then:\n")
    add(f"1. CSR_WRITE CR3 ({_hex(Csr.CR3)}) = the PML4's physical address (4 KiB aligned; bits 12..M−1 are used, "
        "the rest are kept but ignored);")
    add(f"2. CSR_WRITE CR0 ({_hex(Csr.CR0)}) = {_hex(CR0_PG)} (bit {CR0_PG_BIT}, PG).\n")
    add(f"Tables are x86-64's: 512 8-byte little-endian entries per 4 KiB table. A virtual address's bits 47..39 "
        f"index the PML4, 38..30 the PDPT, 29..21 the PD, 20..12 the PT, and 11..0 are the offset; bits 63..47 must "
        f"be all equal (canonical), else GP. An entry's bits 12..M−1 (M = MAXPHYADDR = {m}) hold the next table's "
        f"(or the page's) physical frame; bits {m}..51 are reserved (a page fault with P and RSVD when set in an "
        f"entry the walk reads); bits 52..62 are ignored.\n")
    add("| bit | name | meaning |")
    add("|---|---|---|")
    for name, value in _bit_constants(Pte):
        add(f"| {_bit(value)} | {name} | {_PTE_DOCS.get(name, '')} |")
    add("")
    add(f"Huge pages: PS in a PDPTE maps 1 GiB (its bits 29..13 are reserved: mask {_hex(HUGE_1G_RESERVED)}), PS in "
        f"a PDE maps 2 MiB (bits 20..13 reserved: {_hex(HUGE_2M_RESERVED)}; bit 12 is PAT, ignored). A walk checks, "
        "per entry: present, then reserved bits; it combines W and U by AND and NX by OR down the levels; at the "
        "leaf it checks the access (a STORE needs W, supervisor too, since CR0.WP = 1; a user access needs U; a "
        "fetch needs NX clear) and then writes A (and D on a STORE) back if that changes the entry. A non-leaf "
        "entry gets A when read, even if a lower level then faults.\n")
    add(f"TLB and PWC: {config.tlb_entries} entries, {config.ways}-way, {TlbPolicy(config.tlb_policy).name} "
        f"replacement (RANDOM: a 16-bit Galois LFSR, seed {_hex(LFSR_SEED)}, taps {_hex(LFSR_TAPS)}); "
        f"{config.pwc_entries} PWC entries (FIFO). Like an x86 TLB they are not coherent with RAM: after changing an "
        "entry that may be cached, INVLPG the address (a leaf), or FLUSH / rewrite CR3 (an upper level). INVLPG, "
        "FLUSH, a CR3 write and a CR0 write that changes PG empty the PWC; a CR3 write keeps global (G) TLB "
        "entries.\n")

    add("## Cycles\n")
    add(f"From the rising edge that accepts the request to the `resp_valid` cycle, counted as the difference of "
        f"`ev_cycle` between back-to-back operations. L = `mem_latency` (here {L}), R = L + {BRAM_PORT_REGISTERS} "
        "(the cycles of a read, above); n = page-table entries the walk "
        "reads (`ev_walk_levels`). `ev_walk_cycles` is n·(2 + R), or (n − 1)·(2 + R) + 1 when entry n lies outside "
        "RAM, plus one per A or A/D write-back (`ev_ad_writes`). The rows count no write-back unless they say so (the "
        "entries a walk reads have A set, a store's leaf D); each adds the last row's cycle. Every row is measured on "
        "the RTL by tests/test_kit.py.\n")
    add(_cycle_table(config))
    add("")
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cosim.toolchain.datasheet", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/datasheet.md is not up to date")
    parser.add_argument("--out", type=Path, default=DATASHEET, help="where to write (default docs/datasheet.md)")
    args = parser.parse_args(argv)
    text = datasheet_text()
    if args.check:
        if not args.out.exists() or args.out.read_text() != text:
            print(f"{args.out} is stale: run python -m cosim.toolchain.datasheet", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
