"""Port bundles shared by the MMU's blocks, and the top-level port signals every backend drives.

Bundles are plain classes of Signals: MyHDL flattens them at conversion into readable Verilog names
(`data_port_word_addr`, `tlb_lookup_hit`), so the wiring between blocks reads like the block diagram.
"""

from __future__ import annotations

from myhdl import ResetSignal, Signal, intbv

from hdl.protocol import AXI_PREFIX, DATA_WIDTH, PORTS_IN, PORTS_OUT, VPN_WIDTH, MmuConfig, axi_ports

WORD_BYTES = DATA_WIDTH // 8  # the RAM is organised in 64-bit words with one enable per byte lane

# Page sizes as the walker reports them and the TLB stores them: the walk level of the leaf minus one.
PAGE_4K, PAGE_2M, PAGE_1G = 0, 1, 2
PAGE_SIZE_CODE_WIDTH = 2
LEVEL_WIDTH = 3  # walk levels 1 (PT) .. 4 (PML4)


def index_width(count: int) -> int:
    """Bits of an index into `count` things; at least one, as MyHDL has no zero-width signals."""
    return max(1, (count - 1).bit_length())


def ram_address_width(mem_bytes: int) -> int:
    """Byte-address bits of a RAM of `mem_bytes` (a power of two)."""
    return (mem_bytes - 1).bit_length()


def word_addr_width(mem_bytes: int) -> int:
    """Bits of a 64-bit word's address in a RAM of `mem_bytes`."""
    return ram_address_width(mem_bytes) - (WORD_BYTES - 1).bit_length()


# Words of one ECP5 DP16KD column (16K x 1 bit): a RAM deeper than this is built of two banks (the even words and
# the odd), each read into a register of its own beside its block RAMs, so that no bit of a read has to meet
# another block's in one cycle; the bank is the address's lowest bit, which translation never changes.
BANK_WORDS = 1 << 14


def ram_banks(mem_bytes: int) -> int:
    """The banks the RAM of `mem_bytes` is built of: two when it is deeper than BANK_WORDS, else one."""
    return 2 if mem_bytes // WORD_BYTES > BANK_WORDS else 1


def _bits(width: int) -> Signal:
    """A Signal of `width` bits: a bool for 1-bit ports (MyHDL converts them to plain wires), an intbv otherwise."""
    return Signal(bool(0)) if width == 1 else Signal(intbv(0)[width:])


def top_ports(config: MmuConfig | None = None) -> dict[str, object]:
    """One Signal per port of the `mmu` top (hdl.protocol.PORTS_IN / PORTS_OUT), `rst` a synchronous reset; with
    `config.memory` "axi" also the AXI port, as an AxiManagerPort under the name `m_axi`.

    Backends that simulate the MyHDL model build the top from these, by name: `mmu(config=..., **top_ports())`.
    """
    ports: dict[str, object] = {name: _bits(width) for name, width in {**PORTS_IN, **PORTS_OUT}.items()}
    ports["rst"] = ResetSignal(0, active=1, isasync=False)
    ports["req_ready"] = Signal(bool(1))  # a register that resets to 1 (idle): always_seq resets to the initial value
    if config is not None and config.memory == "axi":
        ports[AXI_PREFIX] = AxiManagerPort(config.maxphyaddr, config.axi_id_width)
    return ports


class AxiManagerPort:
    """The AXI4 manager port (hdl.protocol.axi_ports): one Signal per channel signal, named without the prefix
    (`awvalid`, `rdata`), so that MyHDL names the Verilog ports `m_axi_awvalid`, `m_axi_rdata`, ..."""

    def __init__(self, addr_width: int, id_width: int) -> None:
        inputs, outputs = axi_ports(addr_width, id_width)
        for name, width in {**inputs, **outputs}.items():
            setattr(self, name.removeprefix(f"{AXI_PREFIX}_"), _bits(width))


class MemPort:
    """A client's request to the memory controller: one 64-bit word, read or byte-enabled write.

    `valid` is a one-cycle request. With the bram a write lands at the edge after the one that samples it, and a
    read returns its word in the controller's `rdata` when `rvalid` pulses, MmuConfig.bram_read_cycles later; on AXI
    a write completes when `wdone` pulses and a read when `rvalid` does, whenever the subordinate answers
    (MemResponse). `claims` (the walker's port alone drives it) says the client may ask in this cycle and the other
    will not: the controller routes its address and data by it, so that the routing waits for no `valid`.
    """

    def __init__(self, word_addr_width: int) -> None:
        self.valid = Signal(bool(0))
        self.claims = Signal(bool(0))
        self.write = Signal(bool(0))
        self.word_addr = Signal(intbv(0)[word_addr_width:])
        self.byte_enable = Signal(intbv(0)[WORD_BYTES:])
        self.wdata = Signal(intbv(0)[DATA_WIDTH:])


class MemResponse:
    """The controller's read data, shared by its clients (one request is in flight at a time).

    `rvalid` pulses in the cycle `rdata` first holds the word; `rvalid_next` pulses the cycle before, so a client can
    schedule its response to coincide with the data. `rdata` then holds until the next read.

    Only the AXI manager drives the rest (the bram's controller leaves them constant 0, which is what makes the
    clients' extra waits cost nothing there): `rerror`, with `rvalid`, says the read's response was an error (its
    `rdata` is no word of memory); `wdone` pulses in the cycle a write completes (its B handshake); `error_next`
    says that the read completing with `rvalid_next`, or the write completing with `wdone`, ended in an error.
    """

    def __init__(self) -> None:
        self.rdata = Signal(intbv(0)[DATA_WIDTH:])
        self.rvalid = Signal(bool(0))
        self.rvalid_next = Signal(bool(0))
        self.rerror = Signal(bool(0))
        self.wdone = Signal(bool(0))
        self.error_next = Signal(bool(0))


class WalkResult:
    """What the page walker reports with `done`: a fault, or the leaf's translation; and what the walk cost.

    `frame` is the page's base frame number (the low bits of a huge page's frame are zero) and `size` its page-size
    code (PAGE_4K, PAGE_2M, PAGE_1G); `writable`, `user`, `no_execute` are combined over the levels, `global_` and
    `dirty` are the leaf's own (dirty as written back). A PAGE fault has `present` (the P bit of the error code) and
    `reserved` (RSVD).
    """

    def __init__(self, frame_width: int) -> None:
        self.done = Signal(bool(0))
        self.fault_page = Signal(bool(0))
        self.fault_bus = Signal(bool(0))
        self.present = Signal(bool(0))
        self.reserved = Signal(bool(0))
        self.frame = Signal(intbv(0)[frame_width:])
        self.size = Signal(intbv(0)[PAGE_SIZE_CODE_WIDTH:])
        self.writable = Signal(bool(0))
        self.user = Signal(bool(0))
        self.no_execute = Signal(bool(0))
        self.global_ = Signal(bool(0))
        self.dirty = Signal(bool(0))
        self.levels = Signal(intbv(0)[3:])
        self.cycles = Signal(intbv(0)[16:])
        self.pwc_hit = Signal(bool(0))
        self.ad_writes = Signal(intbv(0)[3:])


class TlbLookup:
    """The TLB looked up by `vpn` (addr[47:12]): `hit`, what the hit entry says of the access, and its translation.

    The tags are compared with `next_vpn`, the page of the request on the MMU's port, in the cycle `accept` says the
    MMU registers it (as `vpn`), and every entry checks the access asked for (`next_store`, `next_user`,
    `next_fetch`; `next_in_ram_2m`/`_1g`: whether the offset into a huge page lies below the RAM's size) at the
    same time; all of it is registered with the request. In the next cycle the lowest-numbered matching way of the
    set is the hit, and its answers are picked: `permitted` (W for a store, U for a user access, NX clear for a
    fetch), `needs_dirty` (permitted, but a store to an entry whose D is clear), `in_ram` (the page's granule lies
    within the RAM), `usable` (all three allow the access now), `frame` (the page's base frame number) and `size`
    (its page-size code). No tag or translation changes between
    the two edges (fills and refreshes happen in a walk, which no request is accepted during), and valid bits that
    do (a flush or a drop carried out at the accepting edge) are applied as they are registered.
    """

    def __init__(self, frame_bits: int) -> None:
        self.vpn = Signal(intbv(0)[VPN_WIDTH:])
        self.next_vpn = Signal(intbv(0)[VPN_WIDTH:])
        self.accept = Signal(bool(0))
        self.next_store = Signal(bool(0))
        self.next_user = Signal(bool(0))
        self.next_fetch = Signal(bool(0))
        self.next_in_ram_2m = Signal(bool(0))
        self.next_in_ram_1g = Signal(bool(0))
        self.hit = Signal(bool(0))
        self.permitted = Signal(bool(0))
        self.needs_dirty = Signal(bool(0))
        self.in_ram = Signal(bool(0))
        self.usable = Signal(bool(0))
        self.frame = Signal(intbv(0)[frame_bits:])
        self.size = Signal(intbv(0)[PAGE_SIZE_CODE_WIDTH:])


class TlbUpdate:
    """What changes the TLB, for the looked-up VPN: one command per cycle, acting at the clock edge.

    Commands: `touch` (a hit: update PLRU), `fill` (insert the `fill_*` translation), `refresh` (overwrite the hit
    entry with it), `drop` (invalidate every entry whose page holds the VPN, in every set), `flush_all`,
    `flush_non_global`. `evict`/`evict_vpn` answer combinationally whether a fill now would replace a valid entry,
    and that entry's base VPN.
    """

    def __init__(self, frame_bits: int) -> None:
        self.touch = Signal(bool(0))
        self.fill = Signal(bool(0))
        self.refresh = Signal(bool(0))
        self.drop = Signal(bool(0))
        self.flush_all = Signal(bool(0))
        self.flush_non_global = Signal(bool(0))
        self.fill_frame = Signal(intbv(0)[frame_bits:])
        self.fill_size = Signal(intbv(0)[PAGE_SIZE_CODE_WIDTH:])
        self.fill_writable = Signal(bool(0))
        self.fill_user = Signal(bool(0))
        self.fill_no_execute = Signal(bool(0))
        self.fill_global = Signal(bool(0))
        self.fill_dirty = Signal(bool(0))
        self.fill_frame_in_ram = Signal(bool(0))  # the frame lies within the RAM
        self.evict = Signal(bool(0))
        self.evict_vpn = Signal(intbv(0)[VPN_WIDTH:])

    def fill_from(self, result: WalkResult) -> None:
        """Fill and refresh with the walker's result: its Signals become the `fill_*` ones, with no copy between."""
        self.fill_frame, self.fill_size = result.frame, result.size
        self.fill_writable, self.fill_user, self.fill_no_execute = result.writable, result.user, result.no_execute
        self.fill_global, self.fill_dirty = result.global_, result.dirty


class PwcLookup:
    """The paging-structure cache looked up by `vpn` (addr[47:12]): its longest-prefix hit. As in TlbLookup, the
    entries are compared with `next_vpn` as the MMU accepts the request (`accept`), and the rest follows from that.

    On `hit` a walk continues at `next_level` (the level below the entry) in the table at frame `table`, with the
    permissions combined from the root down to the entry (`writable`, `user`, `no_execute`); `table_in_ram` says
    whether that table lies within the RAM (kept with the entry, so that no walk compares the frame again).
    """

    def __init__(self, frame_bits: int) -> None:
        self.vpn = Signal(intbv(0)[VPN_WIDTH:])
        self.next_vpn = Signal(intbv(0)[VPN_WIDTH:])
        self.accept = Signal(bool(0))
        self.hit = Signal(bool(0))
        self.next_level = Signal(intbv(0)[LEVEL_WIDTH:])
        self.table = Signal(intbv(0)[frame_bits:])
        self.table_in_ram = Signal(bool(0))
        self.writable = Signal(bool(0))
        self.user = Signal(bool(0))
        self.no_execute = Signal(bool(0))


class PwcInsert:
    """The walker's insert into the paging-structure cache, for the VPN being looked up: `valid` for one cycle, an
    entry of `level` (4, 3 or 2) pointing at the table at frame `table` (within the RAM or not: `table_in_ram`), with
    the permissions combined down to it.
    The cache registers it and writes the entry an edge later (hdl.pwc)."""

    def __init__(self, frame_bits: int) -> None:
        self.valid = Signal(bool(0))
        self.level = Signal(intbv(0)[LEVEL_WIDTH:])
        self.table = Signal(intbv(0)[frame_bits:])
        self.table_in_ram = Signal(bool(0))
        self.writable = Signal(bool(0))
        self.user = Signal(bool(0))
        self.no_execute = Signal(bool(0))
