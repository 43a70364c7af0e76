"""The golden reference: a transaction-level model of the whole MMU and its RAM, implementing exactly the
behaviour contract of docs/architecture.md.

It is cycle-free. Its clock ticks once per operation: operation `seq` responds at cycle `seq` (the
`AccessEvent.cycle`), a CSR read of Counter.CYCLES by operation `seq` returns `seq`, and a walk is estimated
at `mem_latency` cycles per entry read (`walk_cycles`, Counter.WALK_CYCLES). Those are the TIMING_FIELDS
lockstep checks skip; every other field of every event is what the hardware must report too.

Two layers share one walker (`_walk_from`), so entry decoding, reserved bits and permissions exist once:
- `walk`: pure and side-effect free, over any `read_u64` (tools run it on a shadow copy of RAM);
- `ReferenceBackend`: adds the TLB, the paging-structure cache and the A/D write-backs.

Where the contract leaves room, this model (and hdl/, checked in lockstep) reads it so:
- entries of one set can overlap when tables change under cached translations: the lowest matching way wins;
- a failed translation (a page fault on a hit, a walk ending in PAGE or BUS) drops every entry whose page holds
  the address, in every set, as INVLPG does, but leaves the PWC alone;
- `walk_levels` counts the entry read outside RAM that ends a walk with BUS, so a walk reads at least one;
- every hit updates PLRU, a faulting one too; INVLPG counts in INVLPGS even when non-canonical;
- `fetch` only marks LOADs; `user` (CPL 3) makes INVLPG, FLUSH, CSR_READ and CSR_WRITE GP, as on x86: they change
  nothing (a read returns 0), and a GP INVLPG is not counted in INVLPGS;
- CR3 reads back as written; the walk uses its bits 12..M-1. CSR numbers are compared in full (0x1000 is
  not CR0);
- an event's data for a STORE is the part of wdata it writes (its low `size` bytes), even when it faults;
- ops 6 and 7 (the rest of the 3-bit req_op) are GP; an op outside 0..7, a size outside 0..3 or an address
  outside 64 bits cannot reach the ports and is a ValueError.

Speed: the firmware runs on this backend, so the hot path stands apart: `transact` serves an aligned supervisor
hit (or a paging-off access) from two int-keyed dicts and a few field reads; everything else, and every
operation while tracing, takes the general path `_operate`. A TLB entry is a `TlbEntry`, whose `__slots__`
fields CPython reads as fast as list items, and RAM is a bytearray read through memoryviews cast to each access
width.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import NamedTuple

from cosim.backends.base import Backend, BackendError
from hdl.protocol import (
    CR0_PE,
    CR0_PG,
    CR0_WP,
    HUGE_1G_RESERVED,
    HUGE_2M_RESERVED,
    LEVEL_BITS,
    LFSR_SEED,
    LFSR_TAPS,
    OP_WIDTH,
    PAGE_SHIFT,
    VPN_WIDTH,
    AccessEvent,
    Counter,
    Csr,
    ErrorCode,
    Fault,
    MmuConfig,
    Op,
    Pte,
    TlbPolicy,
    is_canonical,
    pte_addr_mask,
    pte_reserved_mask,
)

if sys.byteorder != "little":  # the RAM views use native order; x86 memory is little-endian
    raise BackendError("the reference backend needs a little-endian host")

# The permission bits of an entry and of the error code line up (x86 designed it so): a clear W or U in an
# entry denies exactly the access whose error-code bit has the same position. `deny` masks below rely on it.
assert Pte.WRITABLE == ErrorCode.W and Pte.USER_ACCESSIBLE == ErrorCode.U

_MASK48 = (1 << 48) - 1
_OP_LIMIT = 1 << OP_WIDTH
_OP_VALUES = tuple(range(_OP_LIMIT))  # an event's op as a plain int, also from an Op: cheaper than int()
_MASK64 = (1 << 64) - 1
_VPN_MASK = (1 << VPN_WIDTH) - 1
_CANONICAL_HIGH = (1 << 17) - 1  # addr >> 47 of a canonical upper-half address
_ALIGN_MASK = tuple((1 << s) - 1 for s in range(4))  # low address bits an access of each size must clear
_SIZE_MASK = tuple((1 << (8 << s)) - 1 for s in range(4))  # value mask of each access size
_SIZE_BYTES = (1, 2, 4, 8, 0)  # an event's size: bytes of each log2 size; [-1], a non-memory operation, is 0
_PERM_BITS = Pte.WRITABLE | Pte.USER_ACCESSIBLE
_NX_TO_I = 63 - 4  # shift taking NX (bit 63) to ErrorCode.I (bit 4)
assert Pte.NO_EXECUTE >> _NX_TO_I == ErrorCode.I
# Not an error-code bit: marks a cached entry whose D is clear, so that one test `deny & access` on a hit
# catches both a permission violation and a STORE that must re-walk to set D.
_CLEAN = 1 << 5
_STORE_ACCESS = ErrorCode.W | _CLEAN
_EC_BITS = ErrorCode.P | ErrorCode.W | ErrorCode.U | ErrorCode.RSVD | ErrorCode.I
_EC_U, _EC_I = int(ErrorCode.U), int(ErrorCode.I)
_PRESENT, _ACCESSED, _DIRTY, _HUGE = Pte.PRESENT, Pte.ACCESSED, Pte.DIRTY, Pte.HUGE_PAGE
# log2 of the bytes one entry of a level maps (1 = PT: 4 KiB ... 4 = PML4: 512 GiB); index 0 is unused
_LEVEL_SHIFT = tuple(PAGE_SHIFT + LEVEL_BITS * (level - 1) for level in range(5))

_LOAD, _STORE, _INVLPG, _FLUSH, _CSR_READ, _CSR_WRITE = (int(op) for op in Op)
_PAGE, _GP, _ALIGN, _BUS = int(Fault.PAGE), int(Fault.GP), int(Fault.ALIGN), int(Fault.BUS)
_FAULT_COUNTER = {
    _PAGE: int(Counter.FAULTS_PAGE),
    _GP: int(Counter.FAULTS_GP),
    _ALIGN: int(Counter.FAULTS_ALIGN),
    _BUS: int(Counter.FAULTS_BUS),
}
_C_LOADS, _C_STORES, _C_HITS = int(Counter.LOADS), int(Counter.STORES), int(Counter.TLB_HITS)
_C_MISSES, _C_EVICTIONS = int(Counter.TLB_MISSES), int(Counter.TLB_EVICTIONS)
_C_WALKS, _C_PTE_READS, _C_WALK_CYCLES = int(Counter.WALKS), int(Counter.PTE_READS), int(Counter.WALK_CYCLES)
_C_PWC_HITS, _C_AD_WRITES = int(Counter.PWC_HITS), int(Counter.AD_WRITES)
_C_INVLPGS, _C_FLUSHES, _C_FAULTS_GP = int(Counter.INVLPGS), int(Counter.FLUSHES), int(Counter.FAULTS_GP)
_new_tuple = tuple.__new__  # _new_tuple(AccessEvent, fields in order): no NamedTuple __new__ frame, no partial
_CFG_CSRS = tuple(csr for csr in Csr if csr.name.startswith("CFG_"))
_COUNTER_BASE = int(Csr.COUNTER_BASE)


# ------------------------------------------------------------------------------------------------------------
# The walk, shared by `walk` and the backend


class _EntryRules(NamedTuple):
    """What decoding an entry needs from MAXPHYADDR."""

    addr_mask: int  # bits 12..M-1
    reserved: tuple[int, ...]  # reserved bits, indexed by level * 2 + PS


@cache
def _entry_rules(maxphyaddr: int) -> _EntryRules:
    above_m = pte_reserved_mask(maxphyaddr)
    reserved = [above_m] * 10
    reserved[4 * 2 + 1] = above_m | Pte.HUGE_PAGE  # PS is reserved in a PML4E
    reserved[3 * 2 + 1] = above_m | HUGE_1G_RESERVED
    reserved[2 * 2 + 1] = above_m | HUGE_2M_RESERVED
    return _EntryRules(pte_addr_mask(maxphyaddr), tuple(reserved))


# (fault, errcode, pte_reads, level, entry_addr, entry, deny): a tuple, not a record: the miss path is hot too
_WalkEnd = tuple[int, int, int, int, int, int, int]
# called for each non-leaf entry the walk descends through: (level, entry_addr, entry, deny, vaddr)
_NonLeafVisitor = Callable[[int, int, int, int, int], None]


def _walk_from(
    read_word: Callable[[int], int],
    mem_bytes: int,
    rules: _EntryRules,
    vaddr: int,
    access: int,
    table: int,
    level: int,
    deny: int,
    visit: _NonLeafVisitor | None,
) -> _WalkEnd:
    """Walk from the table of `level` at `table`, with the permissions above it already combined in `deny`.

    `read_word(i)` returns the 64-bit word at physical address 8 * i. `access` holds the error-code bits of
    the access (W, U, I). Returns the end of the walk: on success (Fault.NONE) the leaf's level, address and
    value as read and the combined `deny`; on a fault its kind and error code. Reads count every entry the
    walk reads, including one outside RAM, which ends it with BUS: a walk always reads at least one entry.
    """
    reads = 0
    addr_mask = rules.addr_mask
    reserved = rules.reserved
    while True:
        entry_addr = table | (((vaddr >> _LEVEL_SHIFT[level]) & 0x1FF) << 3)
        if entry_addr >= mem_bytes:
            return (_BUS, 0, reads + 1, level, entry_addr, 0, deny)
        entry = read_word(entry_addr >> 3)
        reads += 1
        if not entry & _PRESENT:
            return (_PAGE, access, reads, level, entry_addr, entry, deny)
        huge = entry & _HUGE
        if entry & reserved[level * 2 + (1 if huge else 0)]:
            return (_PAGE, access | ErrorCode.P | ErrorCode.RSVD, reads, level, entry_addr, entry, deny)
        deny |= (~entry & _PERM_BITS) | ((entry >> _NX_TO_I) & _EC_I)
        if level == 1 or huge:  # PS is reserved at level 4, so a huge entry here is a PDPTE or a PDE
            if deny & access:
                return (_PAGE, access | ErrorCode.P, reads, level, entry_addr, entry, deny)
            return (0, 0, reads, level, entry_addr, entry, deny)
        if visit is not None:
            visit(level, entry_addr, entry, deny, vaddr)
        table = entry & addr_mask
        level -= 1


class Translation(NamedTuple):
    """The outcome of `walk`: a translation with its permissions, or the fault the access takes."""

    fault: int  # Fault.NONE, PAGE, BUS (a table entry outside RAM) or GP (a non-canonical address)
    errcode: int  # ErrorCode bits of a page fault, else 0
    paddr: int  # 0 on a fault
    page_size: int  # 4096, 2 MiB or 1 GiB; 0 on a fault
    writable: bool  # the combined permissions of the whole path (all False on a fault)
    user: bool
    no_execute: bool
    global_page: bool  # G of the leaf
    dirty: bool  # D of the leaf as read (the pure walk writes nothing back)
    pte_reads: int  # entries the walk read (one outside RAM included: it ended the walk with BUS)


_FAULTED = dict(
    paddr=0, page_size=0, writable=False, user=False, no_execute=False, global_page=False, dirty=False
)


def walk(
    read_u64: Callable[[int], int],
    cr3: int,
    vaddr: int,
    *,
    write: bool,
    user: bool,
    fetch: bool,
    maxphyaddr: int,
    mem_bytes: int,
) -> Translation:
    """Translate `vaddr` through the tables `read_u64` reads, as the MMU's walker would, writing nothing.

    Same rules as the backend's walk (presence, reserved bits per level, permissions combined down the path,
    a STORE needing W even in supervisor mode, a fetch needing NX clear) but no TLB, no PWC and no A/D
    write-back, so calling it changes nothing. `read_u64(paddr)` returns the 8 bytes at an 8-aligned physical
    address below `mem_bytes`. The canonical check comes first, as on the MMU; alignment is the caller's.
    """
    access = (ErrorCode.W if write else 0) | (ErrorCode.U if user else 0) | (ErrorCode.I if fetch else 0)
    if not is_canonical(vaddr):
        return Translation(fault=_GP, errcode=0, pte_reads=0, **_FAULTED)
    rules = _entry_rules(maxphyaddr)
    fault, errcode, reads, level, _, entry, deny = _walk_from(
        lambda word: read_u64(word << 3), mem_bytes, rules, vaddr, access, cr3 & rules.addr_mask, 4, 0, None
    )
    if fault:
        return Translation(fault=fault, errcode=errcode, pte_reads=reads, **_FAULTED)
    offset = (1 << _LEVEL_SHIFT[level]) - 1
    return Translation(
        fault=0,
        errcode=0,
        paddr=(entry & rules.addr_mask & ~offset) | (vaddr & offset),
        page_size=offset + 1,
        writable=not deny & ErrorCode.W,
        user=not deny & ErrorCode.U,
        no_execute=bool(deny & ErrorCode.I),
        global_page=bool(entry & Pte.GLOBAL),
        dirty=bool(entry & Pte.DIRTY),
        pte_reads=reads,
    )


# ------------------------------------------------------------------------------------------------------------
# The backend


def _pwc_key(vaddr48: int, level: int) -> int:
    """PWC key of the entry of `level` (2, 3, 4) mapping `vaddr48`: its level below the prefix addr[47:shift]."""
    return (vaddr48 >> _LEVEL_SHIFT[level]) << 3 | level  # 3 bits: level 4 must not spill into the prefix


def _plru_masks(ways: int, way: int) -> tuple[int, int]:
    """(keep, point) so that `state & keep | point` points every node on `way`'s path away from it.

    Node n (1 = root, children 2n and 2n+1) is bit n of the state; bit 0 sends the victim left (lower ways).
    """
    keep, point = -1, 0
    node = ways + way
    while node > 1:
        parent = node >> 1
        keep &= ~(1 << parent)
        if not node & 1:  # `way` is in the left half: send the victim right
            point |= 1 << parent
        node = parent
    return keep, point


# one operation's lookup and walk, for its event: (tlb_hit, tlb_miss, evicted_vpn, walk_levels, pwc_hits,
# ad_writes)
_Info = tuple[bool, bool, int, int, int, int]
_NO_LOOKUP: _Info = (False, False, -1, 0, 0, 0)
_HIT: _Info = (True, False, -1, 0, 0, 0)
_STORED = (0, 0, 0)  # the response of a STORE that completed


class TlbEntry:
    """One valid way of the TLB: a cached translation, and where the lookup structures hold it.

    Slotted, so that the hit paths read its fields by name as fast as they would read the items of a list.
    """

    __slots__ = (  # noqa: RUF023 - in reading order: where the entry is, what it maps, how it is found
        "slot",  # position in the TLB array: set * ways + way
        "set",  # the set holding it
        "base_vpn",  # VPN (4 KiB granule) of the page's first byte
        "vpn_shift",  # page size as a VPN shift: 0 (4 KiB), 9 (2 MiB), 18 (1 GiB)
        "frame",  # physical address of the page's first byte
        "offset_mask",  # mask of the page offset: frame | (addr & offset_mask) is the physical address
        "deny",  # error-code bits of the accesses the combined permissions deny, plus _CLEAN when D is clear
        "is_global",  # G of the leaf (Pte.GLOBAL or 0): a CR3 write keeps the entry
        "key",  # its key in the index dict of its page size
        "plru_keep",  # a hit or fill sets its set's PLRU state to state & plru_keep | plru_point, pointing
        "plru_point",  # the tree away from this way (-1 and 0, no change, for policies other than PLRU)
        "fast_pages",  # the pages (addr >> 12) under which the fast dicts hold it
    )

    def __init__(self, slot: int, set_: int, plru_keep: int, plru_point: int) -> None:
        """An entry of `slot` in set `set_`, its translation still to be set (`_set_translation`)."""
        self.slot = slot
        self.set = set_
        self.base_vpn = self.vpn_shift = self.frame = self.offset_mask = self.deny = self.is_global = 0
        self.key = 0
        self.plru_keep = plru_keep
        self.plru_point = plru_point
        self.fast_pages: list[int] = []


class ReferenceBackend(Backend):
    """The MMU as a Python model: same operations, faults, counters and events as the RTL, no clock."""

    name = "reference"

    def __init__(self, config: MmuConfig, *, trace: bool = False, waves: Path | None = None) -> None:
        super().__init__(config, trace=trace, waves=waves)
        if waves is not None:
            raise BackendError("the reference backend has no clock and writes no waveforms: use an HDL backend")
        if config.tlb_policy not in set(TlbPolicy):
            choices = [p.name for p in TlbPolicy]
            raise ValueError(f"tlb_policy must be one of {choices}, got {config.tlb_policy}")
        self.ram = bytearray(config.mem_bytes)
        """The physical RAM. Tools may read it (or copy it for `walk`); writing it bypasses the MMU."""
        view = memoryview(self.ram)
        self._views = (view, view.cast("H"), view.cast("I"), view.cast("Q"))
        self._ram_u64 = self._views[3]
        self._mem_bytes = config.mem_bytes
        self._rules = _entry_rules(config.maxphyaddr)
        self._latency = config.mem_latency
        self._cfg = {int(csr): config.csr_value(csr) for csr in _CFG_CSRS}

        self._events: list[AccessEvent] = []
        self._counters = [0] * len(Counter)  # of the general path; see `counter` for the fast path's share
        self._general_ops = 0
        self._fast_loads = self._fast_stores = 0
        self._paging = False
        self._cr2 = self._cr3 = self._pfec = 0

        ways, sets = config.ways, config.sets
        self._ways = ways
        self._set_bits = sets.bit_length() - 1
        self._set_mask = sets - 1
        self._policy = TlbPolicy(config.tlb_policy)
        self._plru_state = [0] * sets
        plru = self._policy == TlbPolicy.PLRU
        self._plru_updates = [_plru_masks(ways, w) if plru else (-1, 0) for w in range(ways)]
        self._fifo = [0] * sets
        self._lfsr = LFSR_SEED
        self._tlb: list[TlbEntry | None] = [None] * config.tlb_entries
        self._valid = [0] * sets  # valid entries per set
        self._index: tuple[dict[int, TlbEntry], ...] = ({}, {}, {})  # by page size: 4 KiB, 2 MiB, 1 GiB
        self._huge = 0  # valid 2 MiB and 1 GiB entries: no overlap is possible without one
        # Entries of one set may overlap after the tables change under a cached translation (a 2 MiB fill next
        # to a stale 4 KiB entry). Then the lowest matching way wins, found by scanning the set.
        self._overlap = False
        # The fast path's view of the TLB: addr >> 12 (all 52 bits, so that no non-canonical or out-of-range
        # address can match) -> the entry a supervisor LOAD, resp. STORE (W allowed, D set), of that 4 KiB
        # page hits with no other effect than the PLRU update, the page being in RAM. Filled by the general
        # path as it uses entries; both stay empty while tracing or while entries overlap.
        self._fast_load: dict[int, TlbEntry] = {}
        self._fast_store: dict[int, TlbEntry] = {}
        self._last_touched: TlbEntry | None = None  # the entry the last hit or fill pointed the PLRU bits away from

        self._pwc_size = config.pwc_entries
        self._pwc_key = [-1] * self._pwc_size
        self._pwc_table = [0] * self._pwc_size
        self._pwc_deny = [0] * self._pwc_size
        self._pwc_index: dict[int, int] = {}
        self._pwc_used = 0  # slots fill in order and empty all at once, so this is the lowest free one
        self._pwc_fifo = 0
        self._ad_writes = 0  # of the walk in progress

    @property
    def trace(self) -> bool:
        """Whether operations record events; the fast path (which records none) stands aside while on."""
        return self._trace

    @trace.setter
    def trace(self, on: bool) -> None:
        self._trace = on
        # While tracing, every operation takes `_operate`: `transact` becomes it, so that a caller which binds
        # `transact` (the Cpu does) reaches it in one call instead of through the fast path's misses.
        if on:
            self.transact = self._operate  # type: ignore[method-assign]
        else:
            vars(self).pop("transact", None)
        if on and hasattr(self, "_fast_load"):  # Backend.__init__ sets it before the TLB exists
            self._reindex()

    # -- the hot path ---------------------------------------------------------------------------------------
    def transact(
        self, op: int, addr: int, size: int = 3, wdata: int = 0, user: bool = False, fetch: bool = False
    ) -> tuple[int, int, int]:
        """The fast path: an aligned supervisor data access with paging off, or hitting a `_fast_load` /
        `_fast_store` entry; it changes only the data, the PLRU state and counters. All else takes `_operate`.
        """
        if op >> 1 or user or fetch or size & ~3 or addr & _ALIGN_MASK[size]:
            return self._operate(op, addr, size, wdata, user, fetch)
        if op:
            entry = self._fast_store.get(addr >> PAGE_SHIFT)
            if entry is None:
                return self._physical(op, addr, size, wdata)
            self._fast_stores += 1
        else:
            entry = self._fast_load.get(addr >> PAGE_SHIFT)
            if entry is None:
                return self._physical(op, addr, size, wdata)
            self._fast_loads += 1
        if entry is not self._last_touched:  # touching the same entry again leaves PLRU as it is
            self._last_touched = entry
            state = self._plru_state
            s = entry.set
            state[s] = state[s] & entry.plru_keep | entry.plru_point
        paddr = entry.frame | (addr & entry.offset_mask)
        if op:
            self._views[size][paddr >> size] = wdata & _SIZE_MASK[size]
            return _STORED
        return (self._views[size][paddr >> size], 0, 0)

    def _physical(self, op: int, addr: int, size: int, wdata: int) -> tuple[int, int, int]:
        """The rest of the fast path: an aligned supervisor access with paging off, inside RAM."""
        if self._paging or self._trace or not 0 <= addr < self._mem_bytes:
            return self._operate(op, addr, size, wdata, False, False)
        self._general_ops += 1
        if op:
            self._counters[_C_STORES] += 1
            self._views[size][addr >> size] = wdata & _SIZE_MASK[size]
            return _STORED
        self._counters[_C_LOADS] += 1
        return (self._views[size][addr >> size], 0, 0)

    # -- the general path ---------------------------------------------------------------------------------
    def _operate(
        self, op: int, addr: int, size: int = 3, wdata: int = 0, user: bool = False, fetch: bool = False
    ) -> tuple[int, int, int]:
        """Any operation, exactly as the contract orders its checks, with its event when tracing.

        Also `transact` itself while tracing (hence its defaults): the fast path would only miss then.
        """
        if not 0 <= op < _OP_LIMIT:
            raise ValueError(f"operation {op} does not fit the {OP_WIDTH}-bit req_op (see hdl.protocol.Op)")
        if size & ~3:
            raise ValueError(f"access size must be log2 bytes 0..3, got {size}")
        if not 0 <= addr <= _MASK64:
            raise ValueError(f"address {addr:#x} does not fit in 64 bits")
        seq = self._general_ops + self._fast_loads + self._fast_stores
        self._general_ops += 1
        if op >> 1:
            return self._control(seq, op, addr, wdata, user)
        if not self._paging:
            if addr & _ALIGN_MASK[size]:
                return self._fail(seq, op, addr, size, wdata, _ALIGN, 0, _NO_LOOKUP)
            return self._complete(seq, op, addr, size, wdata, addr, _NO_LOOKUP, None)
        top = addr >> 47
        if top and top != _CANONICAL_HIGH:
            return self._fail(seq, op, addr, size, wdata, _GP, 0, _NO_LOOKUP)
        if addr & _ALIGN_MASK[size]:
            return self._fail(seq, op, addr, size, wdata, _ALIGN, 0, _NO_LOOKUP)
        access = (_STORE_ACCESS if op else 0) | (_EC_U if user else 0) | (_EC_I if fetch and not op else 0)
        vpn = (addr >> PAGE_SHIFT) & _VPN_MASK
        entry = self._index[0].get(vpn)  # a 4 KiB entry: `_lookup`'s first answer, without its call
        if entry is None or self._overlap:
            entry = self._lookup(vpn)
            if entry is None:
                return self._miss(seq, op, addr, size, wdata, access, vpn)
        self._counters[_C_HITS] += 1
        self._last_touched = entry
        state = self._plru_state
        s = entry.set
        state[s] = state[s] & entry.plru_keep | entry.plru_point
        if entry.deny & access:
            return self._hit_slow(seq, op, addr, size, wdata, access, entry)
        paddr = entry.frame | (addr & entry.offset_mask)
        return self._complete(seq, op, addr, size, wdata, paddr, _HIT, entry)

    def _complete(
        self,
        seq: int,
        op: int,
        addr: int,
        size: int,
        wdata: int,
        paddr: int,
        info: _Info,
        entry: TlbEntry | None,
    ) -> tuple[int, int, int]:
        """Steps 5 and 6: the BUS check of the physical address, then the data access (as `transact` does).

        The TLB `entry` that translated the access is then offered to the fast path for this page.
        """
        if paddr >= self._mem_bytes:
            return self._fail(seq, op, addr, size, wdata, _BUS, 0, info)
        if entry is not None and not (self._trace or self._overlap):
            page = addr >> PAGE_SHIFT
            if page not in self._fast_load:
                self._fast_load[page] = entry
                if not entry.deny & _STORE_ACCESS:
                    self._fast_store[page] = entry
                entry.fast_pages.append(page)
        if op:
            data = wdata & _SIZE_MASK[size]
            self._views[size][paddr >> size] = data
            self._counters[_C_STORES] += 1
            rdata = 0
        else:
            data = rdata = self._views[size][paddr >> size]
            self._counters[_C_LOADS] += 1
        if self._trace:
            self._record(seq, op, addr, paddr, size, data, info, 0, 0)
        return (rdata, 0, 0)

    def _fail(
        self, seq: int, op: int, addr: int, size: int, wdata: int, fault: int, errcode: int, info: _Info
    ) -> tuple[int, int, int]:
        """End a LOAD/STORE with `fault`: count it and, for a page fault, latch CR2 and PFEC."""
        self._counters[_FAULT_COUNTER[fault]] += 1
        if fault == _PAGE:
            self._cr2 = addr
            self._pfec = errcode
        if self._trace:
            self._record(seq, op, addr, 0, size, wdata & _SIZE_MASK[size] if op else 0, info, fault, errcode)
        return (0, fault, errcode)

    def _hit_slow(
        self, seq: int, op: int, addr: int, size: int, wdata: int, access: int, entry: TlbEntry
    ) -> tuple[int, int, int]:
        """A hit the cached permissions deny (a page fault), or a STORE to a clean page (a re-walk)."""
        errcode = access & _EC_BITS
        vpn = (addr >> PAGE_SHIFT) & _VPN_MASK
        if entry.deny & errcode:
            self._drop_page(vpn)
            return self._fail(seq, op, addr, size, wdata, _PAGE, errcode | ErrorCode.P, _HIT)
        # D is clear: re-walk as a write, which sets D in memory, and refresh the entry in place
        fault, errcode, reads, level, _, leaf, deny, pwc_hit, ad = self._walk(addr, errcode)
        info = (True, False, -1, reads, pwc_hit, ad)
        if fault:
            self._drop_page(vpn)
            return self._fail(seq, op, addr, size, wdata, fault, errcode, info)
        self._unindex(entry)
        self._set_translation(entry, vpn, level, leaf, deny)
        paddr = entry.frame | (addr & entry.offset_mask)
        return self._complete(seq, op, addr, size, wdata, paddr, info, entry)

    def _miss(
        self, seq: int, op: int, addr: int, size: int, wdata: int, access: int, vpn: int
    ) -> tuple[int, int, int]:
        """A TLB miss: walk, fill on success, then finish the access."""
        self._counters[_C_MISSES] += 1
        fault, errcode, reads, level, _, leaf, deny, pwc_hit, ad = self._walk(addr, access & _EC_BITS)
        if fault:
            self._drop_page(vpn)  # splinters of a huge page in other sets may hold the address
            info = (False, True, -1, reads, pwc_hit, ad)
            return self._fail(seq, op, addr, size, wdata, fault, errcode, info)
        entry, evicted = self._fill(vpn, level, leaf, deny)
        info = (False, True, evicted, reads, pwc_hit, ad)
        paddr = entry.frame | (addr & entry.offset_mask)
        return self._complete(seq, op, addr, size, wdata, paddr, info, entry)

    # -- walk with PWC and A/D write-back --------------------------------------------------------------------
    def _walk(self, vaddr: int, access: int) -> tuple[int, int, int, int, int, int, int, int, int]:
        """One walk: `_walk_from` started below the longest PWC hit, plus A/D write-backs and PWC fills.

        Returns the `_WalkEnd` fields, then pwc_hit and the number of A/D writes, after counting them.
        """
        table, level, deny, pwc_hit = self._cr3 & self._rules.addr_mask, 4, 0, 0
        if self._pwc_size:
            index = self._pwc_index
            v48 = vaddr & _MASK48
            level = 1  # the longest prefix first: a PDE starts the walk at the PT
            slot = index.get(_pwc_key(v48, 2))
            if slot is None:
                level = 2  # a PDPTE: at the PD
                slot = index.get(_pwc_key(v48, 3))
                if slot is None:
                    level = 3  # a PML4E: at the PDPT
                    slot = index.get(_pwc_key(v48, 4))
            if slot is None:
                level = 4
            else:
                table, deny, pwc_hit = self._pwc_table[slot], self._pwc_deny[slot], 1
        self._ad_writes = 0
        q = self._ram_u64
        fault, errcode, reads, level, entry_addr, leaf, deny = _walk_from(
            q.__getitem__, self._mem_bytes, self._rules, vaddr, access, table, level, deny,
            self._visit_non_leaf,
        )
        if not fault:
            updated = leaf | _ACCESSED | (_DIRTY if access & ErrorCode.W else 0)
            if updated != leaf:
                q[entry_addr >> 3] = updated
                self._ad_writes += 1
                leaf = updated
        counters = self._counters
        counters[_C_WALKS] += 1
        counters[_C_PTE_READS] += reads
        counters[_C_WALK_CYCLES] += reads * self._latency
        counters[_C_PWC_HITS] += pwc_hit
        counters[_C_AD_WRITES] += self._ad_writes
        return fault, errcode, reads, level, entry_addr, leaf, deny, pwc_hit, self._ad_writes

    def _visit_non_leaf(self, level: int, entry_addr: int, entry: int, deny: int, vaddr: int) -> None:
        """Set A in a non-leaf entry the walk passes (never D), and cache it in the PWC."""
        if not entry & _ACCESSED:
            self._ram_u64[entry_addr >> 3] = entry | _ACCESSED
            self._ad_writes += 1
        if self._pwc_size:
            slot = self._pwc_used
            if slot < self._pwc_size:
                self._pwc_used = slot + 1
            else:
                slot = self._pwc_fifo
                self._pwc_fifo = (slot + 1) % self._pwc_size
                del self._pwc_index[self._pwc_key[slot]]
            key = _pwc_key(vaddr & _MASK48, level)
            self._pwc_key[slot] = key
            self._pwc_table[slot] = entry & self._rules.addr_mask
            self._pwc_deny[slot] = deny
            self._pwc_index[key] = slot

    def _pwc_clear(self) -> None:
        self._pwc_index.clear()
        self._pwc_used = 0

    # -- TLB -------------------------------------------------------------------------------------------------
    def _lookup(self, vpn: int) -> TlbEntry | None:
        """The entry matching `vpn` in its set (the lowest-numbered way if several do), or None."""
        if self._overlap:
            first = (vpn & self._set_mask) * self._ways
            for entry in self._tlb[first:first + self._ways]:  # the lowest-numbered matching way wins
                if entry is not None and (entry.base_vpn ^ vpn) >> entry.vpn_shift == 0:
                    return entry
            return None
        entry = self._index[0].get(vpn)
        if entry is not None or not self._huge:
            return entry
        low = vpn & self._set_mask
        return self._index[1].get(((vpn >> 9) << self._set_bits) | low) or self._index[2].get(
            ((vpn >> 18) << self._set_bits) | low
        )

    def _fill(self, vpn: int, level: int, leaf: int, deny: int) -> tuple[TlbEntry, int]:
        """Cache a translation in `vpn`'s set; return the entry and the evicted base VPN (-1 if none)."""
        ways = self._ways
        s = vpn & self._set_mask
        first = s * ways
        tlb = self._tlb
        evicted = -1
        if self._valid[s] < ways:
            way = tlb.index(None, first, first + ways) - first
            self._valid[s] += 1
        else:
            way = self._victim(s)
            victim = tlb[first + way]
            assert victim is not None
            evicted = victim.base_vpn
            self._unindex(victim)
            self._counters[_C_EVICTIONS] += 1
        keep, point = self._plru_updates[way]
        self._plru_state[s] = self._plru_state[s] & keep | point
        self._last_touched = None
        entry = TlbEntry(first + way, s, keep, point)
        tlb[first + way] = entry
        self._set_translation(entry, vpn, level, leaf, deny)
        if self._overlap:
            self._reindex()  # the victim may have been the last overlapping entry
        return entry, evicted

    def _victim(self, s: int) -> int:
        """The way of full set `s` the policy replaces; advances the policy state as an evicting fill does."""
        ways = self._ways
        if self._policy == TlbPolicy.FIFO:
            way = self._fifo[s]
            self._fifo[s] = (way + 1) % ways
            return way
        if self._policy == TlbPolicy.RANDOM:
            lfsr = self._lfsr
            self._lfsr = (lfsr >> 1) ^ (LFSR_TAPS if lfsr & 1 else 0)
            return lfsr & (ways - 1)
        node, state = 1, self._plru_state[s]
        while node < ways:
            node = 2 * node + ((state >> node) & 1)
        return node - ways

    def _set_translation(self, entry: TlbEntry, vpn: int, level: int, leaf: int, deny: int) -> None:
        """Make `entry` cache the leaf `leaf` of `level` for `vpn` (a fill, or a refresh in place)."""
        vshift = LEVEL_BITS * (level - 1)
        offset = (1 << (vshift + PAGE_SHIFT)) - 1
        entry.base_vpn = vpn & ~((1 << vshift) - 1)
        entry.vpn_shift = vshift
        entry.frame = leaf & self._rules.addr_mask & ~offset
        entry.offset_mask = offset
        entry.deny = deny | (0 if leaf & _DIRTY else _CLEAN)
        entry.is_global = leaf & Pte.GLOBAL
        key = ((vpn >> vshift) << self._set_bits) | entry.set if vshift else vpn
        entry.key = key
        if not self._overlap and (vshift or self._huge) and self._overlaps(entry):
            self._overlap = True
            self._fast_load.clear()
            self._fast_store.clear()
        self._index_add(entry)

    def _overlaps(self, entry: TlbEntry) -> bool:
        """Whether another entry of `entry`'s set maps part of the same pages."""
        first = entry.set * self._ways
        for other in self._tlb[first:first + self._ways]:
            if other is not None and other is not entry:
                shift = max(other.vpn_shift, entry.vpn_shift)
                if (other.base_vpn ^ entry.base_vpn) >> shift == 0:
                    return True
        return False

    def _index_add(self, entry: TlbEntry) -> None:
        """Enter `entry` in the lookup index (the fast dicts learn of it when `_complete` uses it)."""
        vshift = entry.vpn_shift
        self._index[vshift // LEVEL_BITS][entry.key] = entry
        if vshift:
            self._huge += 1

    def _unindex(self, entry: TlbEntry) -> None:
        """Take `entry` out of the index (before it is dropped or changes its translation)."""
        vshift = entry.vpn_shift
        index = self._index[vshift // LEVEL_BITS]
        if index.get(entry.key) is entry:  # while entries overlap, another may hold the key
            del index[entry.key]
        if vshift:
            self._huge -= 1
        for page in entry.fast_pages:
            for fast in (self._fast_load, self._fast_store):
                if fast.get(page) is entry:
                    del fast[page]
        entry.fast_pages = []

    def _drop_page(self, vpn: int) -> None:
        """Remove every entry, in every set, whose page holds `vpn`: what INVLPG and a failed translation do."""
        self._remove_where(lambda entry: (entry.base_vpn ^ vpn) >> entry.vpn_shift == 0)

    def _remove_where(self, doomed: Callable[[TlbEntry], bool]) -> None:
        for entry in self._tlb:
            if entry is not None and doomed(entry):
                self._unindex(entry)
                self._tlb[entry.slot] = None
                self._valid[entry.set] -= 1
        if self._overlap:
            self._reindex()

    def _reindex(self) -> None:
        """Rebuild the index and the overlap state from the entries (the index is stale during overlaps)."""
        entries = [entry for entry in self._tlb if entry is not None]
        for index in (*self._index, self._fast_load, self._fast_store):
            index.clear()
        self._huge = 0
        self._overlap = any(self._overlaps(entry) for entry in entries)
        for entry in entries:
            entry.fast_pages = []
            self._index_add(entry)

    # -- INVLPG, FLUSH and CSRs ------------------------------------------------------------------------------
    def _control(self, seq: int, op: int, addr: int, wdata: int, user: bool) -> tuple[int, int, int]:
        """INVLPG, FLUSH, CSR_READ, CSR_WRITE, or an undefined op (GP); every one of them GP at CPL 3 (`user`)."""
        wdata &= _MASK64
        rdata = fault = 0
        counters = self._counters
        if user:
            fault = _GP
        elif op == _INVLPG:
            counters[_C_INVLPGS] += 1
            if is_canonical(addr):
                vpn = (addr >> PAGE_SHIFT) & _VPN_MASK
                self._drop_page(vpn)
                self._pwc_clear()
        elif op == _FLUSH:
            counters[_C_FLUSHES] += 1
            self._flush_all()
        elif op == _CSR_READ:
            value = self._csr_read(seq, addr)
            if value is None:
                fault = _GP
            else:
                rdata = value
        elif op != _CSR_WRITE or not self._csr_write(addr, wdata):
            fault = _GP
        if fault:
            counters[_C_FAULTS_GP] += 1
        if self._trace:
            data = wdata if op == _CSR_WRITE else rdata
            self._record(seq, op, addr, 0, -1, data, _NO_LOOKUP, fault, 0)
        return (rdata, fault, 0)

    def _flush_all(self) -> None:
        self._remove_where(lambda entry: True)
        self._pwc_clear()

    def counter(self, counter: Counter) -> int:
        """The value of a performance counter now (CYCLES: the number of operations so far).

        The fast path only counts its loads and stores; hits and the operation count include them here.
        """
        fast = self._fast_loads + self._fast_stores
        if counter == Counter.CYCLES:
            return self._general_ops + fast
        value = self._counters[counter]
        if counter == Counter.TLB_HITS:
            return value + fast
        if counter == Counter.LOADS:
            return value + self._fast_loads
        if counter == Counter.STORES:
            return value + self._fast_stores
        return value

    def _csr_read(self, seq: int, addr: int) -> int | None:
        """The value of CSR `addr` read by operation `seq`, None if there is no such CSR."""
        if addr == Csr.CR0:
            return CR0_PE | CR0_WP | (CR0_PG if self._paging else 0)
        if addr == Csr.CR2:
            return self._cr2
        if addr == Csr.CR3:
            return self._cr3
        if addr == Csr.PFEC:
            return self._pfec
        if addr in self._cfg:
            return self._cfg[addr]
        if 0 <= addr - _COUNTER_BASE < len(Counter):
            counter = Counter(addr - _COUNTER_BASE)
            return seq if counter == Counter.CYCLES else self.counter(counter)
        return None

    def _csr_write(self, addr: int, value: int) -> bool:
        """Write CSR `addr`; False if it does not exist or is read-only."""
        if addr == Csr.CR0:
            paging = bool(value & CR0_PG)
            if paging != self._paging:
                self._paging = paging
                self._flush_all()
        elif addr == Csr.CR2:
            self._cr2 = value
        elif addr == Csr.CR3:
            self._cr3 = value  # as written, flags included; the walk uses bits 12..M-1
            self._counters[_C_FLUSHES] += 1
            self._remove_where(lambda entry: not entry.is_global)
            self._pwc_clear()
        else:
            return False
        return True

    # -- tracing ---------------------------------------------------------------------------------------------
    def _record(
        self,
        seq: int,
        op: int,
        addr: int,
        paddr: int,
        size: int,
        data: int,
        info: _Info,
        fault: int,
        errcode: int,
    ) -> None:
        """Append the event of one operation; `size` is log2 bytes, -1 for a non-memory operation."""
        hit, miss, evicted, levels, pwc_hits, ad_writes = info
        # positional tuple.__new__: a third of the cost of AccessEvent(field=...), on every traced operation
        self._events.append(_new_tuple(AccessEvent, (
            seq, seq, _OP_VALUES[op], addr, paddr, _SIZE_BYTES[size], data, hit, miss, evicted, levels,
            levels * self._latency, pwc_hits, ad_writes, fault, errcode,
        )))  # fmt: skip

    def drain_events(self) -> list[AccessEvent]:
        events, self._events = self._events, []
        return events

    def close(self) -> None:
        """Drop the traced `transact` binding: it refers back to the backend, a cycle that would keep the RAM
        alive until the next full garbage collection."""
        vars(self).pop("transact", None)
