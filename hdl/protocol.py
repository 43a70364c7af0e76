"""The one definition of the CPU↔MMU interface, shared by `hdl/`, `firmware/` and `cosim/`.

Plain Python constants only: the MyHDL blocks get them as literals at conversion, the firmware uses them to
build page tables and to decode faults, and every backend speaks this protocol. Nothing here simulates anything.
See docs/architecture.md for the picture.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

# --------------------------------------------------------------------------------------------------------------
# Request / response


class Op(IntEnum):
    """`req_op`: what the CPU asks of the MMU."""

    LOAD = 0  # read 1 << req_size bytes at req_addr (req_fetch marks an instruction fetch)
    STORE = 1  # write the low 1 << req_size bytes of req_wdata at req_addr
    INVLPG = 2  # drop the TLB entry of the page holding req_addr (global or not) and the paging-structure cache
    FLUSH = 3  # drop every TLB entry, global ones included, and the paging-structure cache
    CSR_READ = 4  # resp_rdata = CSR[req_addr]
    CSR_WRITE = 5  # CSR[req_addr] = req_wdata


OP_WIDTH = 3
# GP with req_user = 1 (CPL 3), reads included, and then they change nothing: as invlpg and mov to or from a control
# register (a FLUSH is what mov to CR3 does to the TLB) are at CPL 3 on x86.
PRIVILEGED_OPS = (Op.INVLPG, Op.FLUSH, Op.CSR_READ, Op.CSR_WRITE)
SIZE_WIDTH = 2  # req_size is log2 of the access size in bytes: 0, 1, 2, 3 -> 1, 2, 4, 8 bytes


class Fault(IntEnum):
    """`resp_fault`: how an operation ended. Checked in this order: GP, ALIGN, PAGE, BUS."""

    NONE = 0
    PAGE = 1  # #PF: CR2 <- address, PFEC <- error code
    GP = 2  # #GP: non-canonical address (paging on), a bad CSR access, PRIVILEGED_OPS from user; CR2 unchanged
    ALIGN = 3  # misaligned access (address not a multiple of its size); CR2 unchanged
    BUS = 4  # physical address outside installed RAM, or an AXI error response (data access or an entry); CR2 kept


FAULT_WIDTH = 3


class ErrorCode:
    """x86 page-fault error code bits (Intel SDM vol. 3A, 4.7)."""

    P = 1 << 0  # 0: page not present; 1: protection violation
    W = 1 << 1  # the access was a write
    U = 1 << 2  # the access was a user-mode access
    RSVD = 1 << 3  # a reserved bit was set in some paging-structure entry
    I = 1 << 4  # noqa: E741 - the SDM's name; the access was an instruction fetch


ERRCODE_WIDTH = 5

# --------------------------------------------------------------------------------------------------------------
# Addresses and page-table entries (x86_64 4-level paging)

VADDR_WIDTH = 64
DATA_WIDTH = 64
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
VPN_WIDTH = 36  # virtual page number of a 48-bit address: bits 47..12
LEVEL_BITS = 9  # each table has 512 entries
ENTRIES_PER_TABLE = 1 << LEVEL_BITS
HUGE_2M_SHIFT = 21
HUGE_1G_SHIFT = 30
DEFAULT_MAXPHYADDR = 40  # M: physical address bits; PTE bits M..51 are reserved


class Pte:
    """Page-table entry bits, the same at every level unless noted."""

    PRESENT = 1 << 0
    WRITABLE = 1 << 1
    USER_ACCESSIBLE = 1 << 2
    WRITE_THROUGH = 1 << 3  # PWT: cached in no way by this MMU, kept for the firmware
    NO_CACHE = 1 << 4  # PCD: likewise
    ACCESSED = 1 << 5
    DIRTY = 1 << 6  # leaf entries only; the hardware never sets it in a non-leaf entry
    HUGE_PAGE = 1 << 7  # PS in a PDPT (1 GiB) or PD (2 MiB) entry; reserved in a PML4 entry; PAT in a PT entry
    GLOBAL = 1 << 8  # leaf entries only
    NO_EXECUTE = 1 << 63


def frame_width(maxphyaddr: int = DEFAULT_MAXPHYADDR) -> int:
    """Bits of a physical frame number: address bits 12..M-1."""
    return maxphyaddr - PAGE_SHIFT


def pte_addr_mask(maxphyaddr: int = DEFAULT_MAXPHYADDR) -> int:
    """Mask of the physical-address field of an entry (bits 12..M-1)."""
    return ((1 << maxphyaddr) - 1) & ~(PAGE_SIZE - 1)


def pte_reserved_mask(maxphyaddr: int = DEFAULT_MAXPHYADDR) -> int:
    """Bits M..51 of any entry: reserved, a page fault with RSVD when set in an entry the walk reads."""
    return ((1 << 52) - 1) & ~((1 << maxphyaddr) - 1)


HUGE_2M_RESERVED = ((1 << HUGE_2M_SHIFT) - 1) & ~((1 << 13) - 1)  # bits 20..13 of a 2 MiB leaf (12 is PAT)
HUGE_1G_RESERVED = ((1 << HUGE_1G_SHIFT) - 1) & ~((1 << 13) - 1)  # bits 29..13 of a 1 GiB leaf


def is_canonical(vaddr: int) -> bool:
    """Bits 63..47 all equal: the only addresses 4-level paging accepts."""
    top = (vaddr >> 47) & ((1 << 17) - 1)
    return top in (0, (1 << 17) - 1)


def table_index(vaddr: int, level: int) -> int:
    """Index into the table of `level` (4 = PML4, 3 = PDPT, 2 = PD, 1 = PT)."""
    return (vaddr >> (PAGE_SHIFT + LEVEL_BITS * (level - 1))) & (ENTRIES_PER_TABLE - 1)


# --------------------------------------------------------------------------------------------------------------
# Control / status registers (CSR_READ / CSR_WRITE, address in req_addr)


class Csr(IntEnum):
    """The CSR map. A read or write of an address not listed here, or a write of a read-only CSR, is a GP fault."""

    CR0 = 0x000  # bit 31 PG (paging enable, read/write); bit 16 WP and bit 0 PE read as 1, writes ignore them
    CR2 = 0x002  # page-fault linear address (read/write, as `mov cr2` allows)
    CR3 = 0x003  # PML4 physical address in bits 12..M-1; a write drops non-global TLB entries and the PWC
    PFEC = 0x004  # error code of the last page fault (read-only; on x86 it is pushed on the stack)
    # read-only configuration, so software can tell which hardware it runs on
    CFG_TLB_ENTRIES = 0x010
    CFG_TLB_WAYS = 0x011
    CFG_TLB_POLICY = 0x012  # a TlbPolicy value
    CFG_PWC_ENTRIES = 0x013
    CFG_MEM_BYTES = 0x014
    CFG_MAXPHYADDR = 0x015
    CFG_MEM_LATENCY = 0x016  # the bram's read latency in cycles; 0 with the AXI memory (the subordinate's)
    COUNTER_BASE = 0x100  # performance counters, read-only: COUNTER_BASE + Counter


CR0_PE = 1 << 0
CR0_WP = 1 << 16
CR0_PG_BIT = 31  # the bit the hardware tests (a CR0 write that flips it switches paging)
CR0_PG = 1 << CR0_PG_BIT
CSR_ADDR_WIDTH = 12


class Counter(IntEnum):
    """Performance counters, 64 bits each, at Csr.COUNTER_BASE + index. They count from reset and never wrap."""

    CYCLES = 0
    LOADS = 1  # LOAD operations that completed without fault
    STORES = 2  # STORE operations that completed without fault
    TLB_HITS = 3
    TLB_MISSES = 4
    TLB_EVICTIONS = 5  # fills that replaced a valid entry
    WALKS = 6
    WALK_CYCLES = 7
    PTE_READS = 8
    PWC_HITS = 9
    AD_WRITES = 10  # page-table entries written back to set A or D
    INVLPGS = 11
    FLUSHES = 12  # FLUSH operations and CR3 writes
    FAULTS_PAGE = 13
    FAULTS_GP = 14
    FAULTS_ALIGN = 15
    FAULTS_BUS = 16


class TlbPolicy(IntEnum):
    """TLB replacement policy. A fill takes the lowest-numbered invalid way of its set if there is one."""

    PLRU = 0  # tree pseudo-LRU per set, updated on every hit and fill
    FIFO = 1  # per-set pointer to the oldest fill, advanced by each fill that evicts
    RANDOM = 2  # one 16-bit Galois LFSR (LFSR_TAPS, LFSR_SEED), stepped by each fill that evicts


LFSR_SEED = 0xACE1  # the RANDOM policy's LFSR after reset
LFSR_TAPS = 0xB400  # x^16 + x^14 + x^13 + x^11 + 1, Galois form: l = l >> 1 ^ (LFSR_TAPS if l & 1 else 0)


BRAM_PORT_REGISTERS = 3  # the bram's request register and its two read-data registers (hdl/memory_controller.py)
MEMORY_KINDS = ("bram", "axi")  # MmuConfig.memory: where the MMU's RAM accesses go (docs/hardware.md)
AXI_DEFAULT_ID_WIDTH = 4


@dataclass(frozen=True)
class MmuConfig:
    """Parameters of one MMU configuration; every backend is built from one of these."""

    tlb_entries: int = 16
    tlb_ways: int = 0  # 0: fully associative (ways = entries)
    tlb_policy: TlbPolicy = TlbPolicy.PLRU
    pwc_entries: int = 8  # paging-structure cache entries; 0 disables it
    mem_bytes: int = 1 << 20
    mem_latency: int = 1  # the RAM's own read latency in cycles (>= 1: the RAM reads synchronously)
    maxphyaddr: int = DEFAULT_MAXPHYADDR
    memory: str = "bram"  # a MEMORY_KINDS value: the RAM inside the MMU, or an AXI4 manager port to memory outside
    axi_id_width: int = AXI_DEFAULT_ID_WIDTH  # AxID bits of the AXI port (memory "axi" only; the ID is constant 0)

    @property
    def ways(self) -> int:
        return self.tlb_ways or self.tlb_entries

    @property
    def sets(self) -> int:
        return self.tlb_entries // self.ways

    @property
    def bram_read_cycles(self) -> int:
        """Cycles from a read request on the bram memory to its word: the RAM's latency, and the registers that
        keep the block RAM off the MMU's paths, one before it and two after (hdl/memory_controller.py)."""
        return self.mem_latency + BRAM_PORT_REGISTERS

    def validate(self) -> None:
        """Raise ValueError naming the first parameter the hardware cannot be built with."""

        def pow2(n: int) -> bool:
            return n > 0 and n & (n - 1) == 0

        if not pow2(self.tlb_entries):
            raise ValueError(f"tlb_entries must be a power of two, got {self.tlb_entries}")
        if not pow2(self.ways) or self.ways > self.tlb_entries:
            raise ValueError(f"tlb_ways must be a power of two <= tlb_entries, got {self.tlb_ways}")
        if self.pwc_entries < 0 or (self.pwc_entries and not pow2(self.pwc_entries)):
            raise ValueError(f"pwc_entries must be 0 or a power of two, got {self.pwc_entries}")
        if not pow2(self.mem_bytes) or self.mem_bytes < 1 << 16:
            raise ValueError(f"mem_bytes must be a power of two >= 64 KiB, got {self.mem_bytes}")
        if self.mem_bytes > 1 << self.maxphyaddr:
            raise ValueError("mem_bytes exceeds what MAXPHYADDR can address")
        if not 1 <= self.mem_latency <= 64:
            raise ValueError(f"mem_latency must be 1..64 cycles, got {self.mem_latency}")
        if not 32 <= self.maxphyaddr <= 52:
            raise ValueError(f"maxphyaddr must be 32..52, got {self.maxphyaddr}")
        if self.memory not in MEMORY_KINDS:
            raise ValueError(f"memory must be one of {', '.join(MEMORY_KINDS)}, got {self.memory!r}")
        if self.memory == "axi" and self.mem_latency != 1:
            raise ValueError("mem_latency applies to the bram memory only: on AXI the subordinate sets the latency")
        if not 1 <= self.axi_id_width <= 32:
            raise ValueError(f"axi_id_width must be 1..32, got {self.axi_id_width}")

    def csr_value(self, csr: Csr) -> int:
        """The value of a read-only configuration CSR."""
        return {
            Csr.CFG_TLB_ENTRIES: self.tlb_entries,
            Csr.CFG_TLB_WAYS: self.ways,
            Csr.CFG_TLB_POLICY: int(self.tlb_policy),
            Csr.CFG_PWC_ENTRIES: self.pwc_entries,
            Csr.CFG_MEM_BYTES: self.mem_bytes,
            Csr.CFG_MAXPHYADDR: self.maxphyaddr,
            Csr.CFG_MEM_LATENCY: self.mem_latency if self.memory == "bram" else 0,  # 0: the AXI subordinate's
        }[csr]

    def fields(self) -> dict[str, object]:
        """The parameters by name, as reports show them: the AXI ones only when `memory` is "axi", so that a bram
        configuration reads as it did before the AXI port existed."""
        fields = dataclasses.asdict(self)
        if self.memory == "bram":
            del fields["memory"], fields["axi_id_width"]
        return fields


# --------------------------------------------------------------------------------------------------------------
# Top-level ports of the `mmu` module (hdl/mmu.py). Backends drive and sample exactly these names.
# Handshake: the CPU holds req_* with req_valid=1 until a rising edge samples req_ready=1. Exactly one response
# follows, as a one-cycle pulse of resp_valid; resp_* and ev_* are valid in that cycle only. One request at a time.

PORTS_IN: dict[str, int] = {
    "clk": 1,
    "rst": 1,  # synchronous, active high
    "req_valid": 1,
    "req_op": OP_WIDTH,
    "req_size": SIZE_WIDTH,
    "req_user": 1,  # the access is from user mode (CPL 3)
    "req_fetch": 1,  # the access is an instruction fetch (LOAD only)
    "req_addr": VADDR_WIDTH,
    "req_wdata": DATA_WIDTH,
}

PORTS_OUT: dict[str, int] = {
    "req_ready": 1,
    "resp_valid": 1,
    "resp_rdata": DATA_WIDTH,  # loads: the value, zero-extended; CSR_READ: the register
    "resp_fault": FAULT_WIDTH,
    "resp_errcode": ERRCODE_WIDTH,  # page faults only, else 0
    # the access event, valid with resp_valid: what the TLB and walker did for this operation
    "ev_cycle": 64,  # the value of Counter.CYCLES in the response cycle
    "ev_paddr": 52,  # the translated physical address (0 when the operation faulted or did not translate)
    "ev_tlb_hit": 1,
    "ev_tlb_miss": 1,
    "ev_evict": 1,  # the fill replaced a valid entry...
    "ev_evict_vpn": VPN_WIDTH,  # ...whose virtual page number (4 KiB granule of its base) was this
    "ev_walk_levels": 3,  # page-table entries the walk read (0: no walk)
    "ev_walk_cycles": 16,  # cycles from walk start to walk end
    "ev_pwc_hits": 2,  # 0 or 1: the walk started from a paging-structure-cache entry
    "ev_ad_writes": 3,  # entries written back to set A or D
}


# --------------------------------------------------------------------------------------------------------------
# The AXI4 manager port of an MMU built with memory "axi" (hdl/axi_manager.py), in addition to the ports above.
# Every RAM access — the walker's entry reads and A/D write-backs, the data loads and stores — is one single-beat
# transfer: AxLEN 0, AxSIZE 3 (64 bits), AxBURST INCR, WSTRB the access's byte lanes, AxID constant 0; one
# transfer outstanding at a time, so responses come back in order and RID/BID only confirm it. The names follow
# the AMBA AXI4 signal names under the prefix `m_axi_` (what cocotbext-axi's AxiBus.from_prefix finds).

AXI_PREFIX = "m_axi"
AXI_DATA_WIDTH = DATA_WIDTH
AXI_LEN_WIDTH = 8
AXI_SIZE = 3  # AxSIZE: log2 of the 8 bytes of every beat
AXI_BURST_INCR = 1  # AxBURST
AXI_RESP_WIDTH = 2


class AxiResp(IntEnum):
    """RRESP / BRESP. Anything but OKAY ends the operation with Fault.BUS: SLVERR and DECERR, and EXOKAY too, which
    only an exclusive access may get (AxLOCK is not driven). So does a response with another ID or without RLAST."""

    OKAY = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


class AxiProt:
    """AxPROT bits. Data accesses: PRIVILEGED = not req_user, INSTRUCTION = a fetch (LOAD with req_fetch). The
    walker's reads and A/D write-backs are implicit supervisor data accesses (x86 walks with supervisor rights
    whatever the CPL): PRIVILEGED, never INSTRUCTION. NON_SECURE is always set: x86 has no secure state, and a
    non-secure transfer can reach no memory that TrustZone reserves."""

    PRIVILEGED = 1 << 0
    NON_SECURE = 1 << 1
    INSTRUCTION = 1 << 2


AXI_PROT_WIDTH = 3
AXI_PROT_WALKER = AxiProt.PRIVILEGED | AxiProt.NON_SECURE


def axi_ports(addr_width: int = DEFAULT_MAXPHYADDR, id_width: int = AXI_DEFAULT_ID_WIDTH) -> tuple[
        dict[str, int], dict[str, int]]:
    """The AXI port's inputs and outputs (name -> width) for an address width (MAXPHYADDR) and an AxID width."""
    p = AXI_PREFIX
    outputs = {
        f"{p}_awid": id_width, f"{p}_awaddr": addr_width, f"{p}_awlen": AXI_LEN_WIDTH, f"{p}_awsize": 3,
        f"{p}_awburst": 2, f"{p}_awprot": AXI_PROT_WIDTH, f"{p}_awvalid": 1,
        f"{p}_wdata": AXI_DATA_WIDTH, f"{p}_wstrb": AXI_DATA_WIDTH // 8, f"{p}_wlast": 1, f"{p}_wvalid": 1,
        f"{p}_bready": 1,
        f"{p}_arid": id_width, f"{p}_araddr": addr_width, f"{p}_arlen": AXI_LEN_WIDTH, f"{p}_arsize": 3,
        f"{p}_arburst": 2, f"{p}_arprot": AXI_PROT_WIDTH, f"{p}_arvalid": 1,
        f"{p}_rready": 1,
    }
    inputs = {
        f"{p}_awready": 1, f"{p}_wready": 1, f"{p}_bid": id_width, f"{p}_bresp": AXI_RESP_WIDTH, f"{p}_bvalid": 1,
        f"{p}_arready": 1, f"{p}_rid": id_width, f"{p}_rdata": AXI_DATA_WIDTH, f"{p}_rresp": AXI_RESP_WIDTH,
        f"{p}_rlast": 1, f"{p}_rvalid": 1,
    }
    return inputs, outputs


AXI_PORTS_IN, AXI_PORTS_OUT = axi_ports()  # of the default configuration (MAXPHYADDR 40, 4-bit IDs)


def top_port_widths(config: MmuConfig) -> tuple[dict[str, int], dict[str, int]]:
    """Every port of the `mmu` built for `config`: PORTS_IN / PORTS_OUT, and the AXI port's with memory "axi"."""
    if config.memory != "axi":
        return dict(PORTS_IN), dict(PORTS_OUT)
    axi_in, axi_out = axi_ports(config.maxphyaddr, config.axi_id_width)
    return {**PORTS_IN, **axi_in}, {**PORTS_OUT, **axi_out}


# --------------------------------------------------------------------------------------------------------------
# The trace event record: one per operation, from the ev_* ports on HDL backends and from the model on `reference`.


class AccessEvent(NamedTuple):
    seq: int  # operation number since the backend started, from 0
    cycle: int
    op: int  # an Op
    vaddr: int  # req_addr
    paddr: int
    size: int  # bytes (1, 2, 4, 8); 0 for non-memory operations
    data: int  # STORE/CSR_WRITE: the data written; LOAD/CSR_READ: resp_rdata; else 0 (from the request/response)
    tlb_hit: bool
    tlb_miss: bool
    evicted_vpn: int  # -1 when no valid entry was replaced
    walk_levels: int
    walk_cycles: int
    pwc_hits: int
    ad_writes: int
    fault: int  # a Fault
    errcode: int


# Fields a cycle-free model cannot reproduce; lockstep checks skip them when `reference` takes part.
TIMING_FIELDS = ("cycle", "walk_cycles")
