"""An independent x86_64 translation model with random page tables and access streams, for randomized tests.

The model (`Machine`, `walk`) is x86_64 4-level paging as the SDM describes it, with no TLB and no
paging-structure cache: every access walks the tables in RAM. A correct MMU can differ from it only when tables
change under cached translations, so the stream generator invalidates after each edit it makes (INVLPG after a
leaf edit, FLUSH or a CR3 write after a non-leaf one) and keeps global pages identical in both address spaces. Data
stores never land in a page-table frame; table edits go through a supervisor window onto all of RAM, as blog_os's
physical-memory offset does. Used by tests/test_random_translation.py and the cocotb MMU and walker testbenches.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cosim.backends import open_backend
from hdl.protocol import (
    CR0_PE,
    CR0_PG,
    CR0_WP,
    HUGE_1G_RESERVED,
    HUGE_2M_RESERVED,
    PAGE_SIZE,
    AccessEvent,
    Csr,
    ErrorCode,
    Fault,
    MmuConfig,
    Op,
    Pte,
    is_canonical,
    pte_addr_mask,
    pte_reserved_mask,
    table_index,
)

# -- the model: x86_64 translation with no caches ----------------------------------------------------------------

LEVEL_PAGE_SHIFT = {1: 12, 2: 21, 3: 30}  # page size of a leaf at each level
DEFINED_OPS = frozenset(int(op) for op in Op)


class Memory:
    """Physical RAM, little-endian, zero at reset like every backend's."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data = bytearray(size)

    def read(self, addr: int, nbytes: int = 8) -> int:
        return int.from_bytes(self.data[addr:addr + nbytes], "little")

    def write(self, addr: int, value: int, nbytes: int = 8) -> None:
        self.data[addr:addr + nbytes] = (value & ((1 << 8 * nbytes) - 1)).to_bytes(nbytes, "little")


@dataclass(frozen=True)
class Access:
    write: bool = False
    user: bool = False
    fetch: bool = False

    @property
    def error_bits(self) -> int:
        return ErrorCode.W * self.write | ErrorCode.U * self.user | ErrorCode.I * self.fetch


@dataclass
class Walk:
    """What one walk did, in order, and how it ended."""

    fault: Fault = Fault.NONE
    errcode: int = 0
    paddr: int = 0  # the translated address (fault NONE)
    level: int = 0  # the leaf's level: 1 (4 KiB), 2 (2 MiB), 3 (1 GiB)
    frame: int = 0  # the page's base address
    writable: bool = True  # combined over the levels
    user: bool = True
    no_execute: bool = False
    global_: bool = False
    dirty: bool = False  # the leaf's D after the walk
    reads: int = 0  # entries read, counting one outside RAM
    memory_ops: list[tuple[str, int, int]] = field(default_factory=list)  # ("read"|"write", paddr, value)
    inserts: list[tuple[int, int, bool, bool, bool]] = field(default_factory=list)  # (level, table, W, U, NX)


def reserved_bits(entry: int, level: int, maxphyaddr: int) -> bool:
    """SDM 4.5: bits M..51 anywhere; PS in a PML4E; the low address bits of a 2 MiB or 1 GiB page."""
    huge = bool(entry & Pte.HUGE_PAGE)
    return bool(entry & pte_reserved_mask(maxphyaddr)) or (level == 4 and huge) or (
        level == 3 and huge and bool(entry & HUGE_1G_RESERVED)) or (
        level == 2 and huge and bool(entry & HUGE_2M_RESERVED))


def walk(
    memory: Memory, vaddr: int, access: Access, table: int, maxphyaddr: int, *, level: int = 4,
    writable: bool = True, user: bool = True, no_execute: bool = False,
) -> Walk:  # fmt: skip
    """Translate `vaddr` from the table at `table` of `level`, setting A (and D) in `memory` as the CPU does.

    The keyword arguments start a walk below the root with the permissions combined above it (what a
    paging-structure-cache hit provides).
    """
    result = Walk(writable=writable, user=user, no_execute=no_execute)
    address_mask = pte_addr_mask(maxphyaddr)
    while True:
        entry_addr = table + 8 * table_index(vaddr, level)
        result.reads += 1
        if entry_addr >= memory.size:
            result.fault = Fault.BUS
            return result
        entry = memory.read(entry_addr)
        result.memory_ops.append(("read", entry_addr, entry))
        if not entry & Pte.PRESENT:
            result.fault, result.errcode = Fault.PAGE, access.error_bits
            return result
        if reserved_bits(entry, level, maxphyaddr):
            result.fault, result.errcode = Fault.PAGE, ErrorCode.P | ErrorCode.RSVD | access.error_bits
            return result
        result.writable &= bool(entry & Pte.WRITABLE)
        result.user &= bool(entry & Pte.USER_ACCESSIBLE)
        result.no_execute |= bool(entry & Pte.NO_EXECUTE)
        if level == 1 or (level in (2, 3) and entry & Pte.HUGE_PAGE):
            break
        if not entry & Pte.ACCESSED:
            memory.write(entry_addr, entry | Pte.ACCESSED)
            result.memory_ops.append(("write", entry_addr, entry | Pte.ACCESSED))
        table = entry & address_mask
        result.inserts.append((level, table, result.writable, result.user, result.no_execute))
        level -= 1
    denied = ((access.write and not result.writable) or (access.user and not result.user)
              or (access.fetch and result.no_execute))
    if denied:
        result.fault, result.errcode = Fault.PAGE, ErrorCode.P | access.error_bits
        return result
    updated = entry | Pte.ACCESSED | (Pte.DIRTY if access.write else 0)
    if updated != entry:
        memory.write(entry_addr, updated)
        result.memory_ops.append(("write", entry_addr, updated))
    page_shift = LEVEL_PAGE_SHIFT[level]
    result.level, result.global_, result.dirty = level, bool(entry & Pte.GLOBAL), bool(updated & Pte.DIRTY)
    result.frame = entry & address_mask & ~((1 << page_shift) - 1)
    result.paddr = result.frame | vaddr & ((1 << page_shift) - 1)
    return result


class Machine:
    """The architectural state the protocol exposes (CR0.PG, CR2, CR3, PFEC, RAM), with no TLB at all."""

    def __init__(self, config: MmuConfig) -> None:
        self.config = config
        self.memory = Memory(config.mem_bytes)
        self.paging = False
        self.cr2 = self.cr3 = self.pfec = 0

    def translate(self, vaddr: int, access: Access) -> Walk:
        return walk(self.memory, vaddr, access, self.cr3 & pte_addr_mask(self.config.maxphyaddr),
                    self.config.maxphyaddr)

    def execute(self, op: int, addr: int, size: int, wdata: int, user: bool, fetch: bool) -> tuple[int, int, int]:
        """One protocol operation: (rdata, fault, errcode), in the contract's order of checks."""
        if op in (Op.LOAD, Op.STORE):  # only a LOAD can be an instruction fetch
            store = op == Op.STORE
            return self._access(store, addr, size, wdata, Access(store, user, fetch and not store))
        if op not in DEFINED_OPS:
            return 0, Fault.GP, 0  # the two op codes Op leaves undefined (docs/hardware.md, decision 7)
        if user:
            return 0, Fault.GP, 0  # INVLPG, FLUSH and `mov cr` are privileged: #GP at CPL 3, nothing changes
        if op == Op.CSR_READ:
            values = {Csr.CR0: CR0_PE | CR0_WP | CR0_PG * self.paging, Csr.CR2: self.cr2, Csr.CR3: self.cr3,
                      Csr.PFEC: self.pfec}
            if addr in values:
                return values[addr], Fault.NONE, 0
            if addr in {csr for csr in Csr if csr.name.startswith("CFG_")}:
                return self.config.csr_value(Csr(addr)), Fault.NONE, 0
            return 0, Fault.GP, 0
        if op == Op.CSR_WRITE:
            if addr == Csr.CR0:
                self.paging = bool(wdata & CR0_PG)
            elif addr == Csr.CR2:
                self.cr2 = wdata
            elif addr == Csr.CR3:
                self.cr3 = wdata
            else:
                return 0, Fault.GP, 0
        return 0, Fault.NONE, 0  # INVLPG and FLUSH change nothing a TLB-free machine has

    def _access(self, store: bool, vaddr: int, size: int, wdata: int, access: Access) -> tuple[int, int, int]:
        nbytes = 1 << size
        if self.paging and not is_canonical(vaddr):
            return 0, Fault.GP, 0
        if vaddr % nbytes:
            return 0, Fault.ALIGN, 0
        paddr = vaddr
        if self.paging:
            result = self.translate(vaddr, access)
            if result.fault == Fault.PAGE:
                self.cr2, self.pfec = vaddr, result.errcode
                return 0, Fault.PAGE, result.errcode
            if result.fault == Fault.BUS:
                return 0, Fault.BUS, 0
            paddr = result.paddr
        if paddr >= self.memory.size:
            return 0, Fault.BUS, 0
        if store:
            self.memory.write(paddr, wdata, nbytes)
            return 0, Fault.NONE, 0
        return self.memory.read(paddr, nbytes), Fault.NONE, 0


# -- random page tables ------------------------------------------------------------------------------------------

PHYS_WINDOW = 0xFFFF_C000_0000_0000  # a supervisor 1 GiB page onto physical 0, in both address spaces
SHARED_REGION = 0xFFFF_8000_0000_0000  # a PML4 slot whose subtree both address spaces share: the global pages
PRIVATE_SLOTS = (0, 1, 3, 0x17F)  # PML4 slots each address space fills with its own tables
RECENT_PAGES = 24  # the working set streams return to: more pages than small TLBs hold


class Request(NamedTuple):
    op: int
    addr: int
    size: int = 3
    wdata: int = 0
    user: bool = False
    fetch: bool = False


@dataclass
class Mapping:
    """An entry the generator wrote: where it lives, what it maps, whether it is a leaf."""

    entry_addr: int
    vaddr: int  # first address the entry covers
    level: int  # of the table holding it
    leaf: bool
    root: int | None  # the PML4 of its address space; None in the subtree both address spaces share


class TableBuilder:
    """Writes two random address spaces into a Machine's RAM with ordinary entries, huge pages, odd flags,
    reserved bits, absent entries and tables outside RAM."""

    def __init__(self, rng: random.Random, memory: Memory, maxphyaddr: int) -> None:
        self.rng, self.memory, self.maxphyaddr = rng, memory, maxphyaddr
        self.frames = memory.size // PAGE_SIZE
        self.next_table = 1  # tables from frame 1 up; data frames from the top down
        self.table_frames: set[int] = set()
        self.mappings: list[Mapping] = []
        self.roots: list[int] = []

    def table(self) -> int:
        frame = self.next_table
        self.next_table += 1
        assert frame < self.frames // 2, "the tables ran into the data frames"
        self.table_frames.add(frame)
        return frame * PAGE_SIZE

    def flags(self, leaf: bool, shared: bool) -> int:
        """Random flags; tables mostly permit everything, as an OS's do, so that most restrictions are the leaf's
        and most accesses translate (a stream of faults would leave the TLB empty)."""
        r = self.rng.random
        strict = 1.0 if leaf else 0.2  # a table entry is 5 times less likely to deny
        bits = Pte.PRESENT if r() < 1 - 0.08 * strict else 0
        bits |= Pte.WRITABLE * (r() < 1 - 0.35 * strict) | Pte.USER_ACCESSIBLE * (r() < 1 - 0.35 * strict)
        bits |= Pte.NO_EXECUTE * (r() < 0.25 * strict)
        bits |= Pte.ACCESSED * (r() < 0.3) | Pte.WRITE_THROUGH * (r() < 0.1) | Pte.NO_CACHE * (r() < 0.1)
        if leaf:
            bits |= Pte.DIRTY * (r() < 0.3) | Pte.GLOBAL * (shared and r() < 0.5)
        if r() < 0.03:  # a reserved bit: bits M..51
            bits |= 1 << self.rng.randrange(self.maxphyaddr, 52)
        return bits

    def data_frame(self) -> int:
        if self.rng.random() < 0.05:  # outside RAM: a BUS fault when accessed
            return self.rng.randrange(self.frames, 4 * self.frames) * PAGE_SIZE
        return self.rng.randrange(self.frames // 2, self.frames) * PAGE_SIZE

    def fill(self, table: int, level: int, base: int, slots: list[int], root: int | None) -> None:
        memory = self.memory
        for index in slots:
            vaddr = base | index << (12 + 9 * (level - 1))
            if vaddr & 1 << 47:
                vaddr |= ((1 << 64) - 1) & ~((1 << 48) - 1)  # sign-extend into the canonical upper half
            entry_addr = table + 8 * index
            huge = level in (2, 3) and self.rng.random() < 0.3
            if level == 1 or huge:
                frame = self.data_frame() if level == 1 else (0 if self.rng.random() < 0.9 else 1 << 30)
                entry = frame | self.flags(True, root is None) | Pte.HUGE_PAGE * huge
                if huge and self.rng.random() < 0.05:
                    entry |= 1 << 13  # the low address bits of a huge page are reserved
                memory.write(entry_addr, entry)
                self.mappings.append(Mapping(entry_addr, vaddr, level, True, root))
                continue
            self.mappings.append(Mapping(entry_addr, vaddr, level, False, root))
            if self.rng.random() < 0.04:  # a table outside RAM: the walk ends with BUS
                memory.write(entry_addr, self.frames * PAGE_SIZE * 2 | Pte.PRESENT | Pte.WRITABLE)
                continue
            child = self.table()
            memory.write(entry_addr, child | self.flags(False, root is None) | Pte.HUGE_PAGE * (
                level == 4 and self.rng.random() < 0.03))  # PS in a PML4E is reserved
            self.fill(child, level - 1, vaddr, self.pick_slots(level - 1), root)

    def pick_slots(self, level: int) -> list[int]:
        count = {3: 2, 2: 3, 1: 6}[level]
        start = self.rng.randrange(0, 512 - count)
        return sorted({start, *self.rng.sample(range(512), count - 1)})

    def build(self) -> None:
        memory = self.memory
        window_pdpt, shared_pdpt = self.table(), self.table()
        memory.write(window_pdpt, Pte.PRESENT | Pte.WRITABLE | Pte.HUGE_PAGE | Pte.NO_EXECUTE | Pte.GLOBAL)
        self.fill(shared_pdpt, 3, SHARED_REGION, self.pick_slots(3), None)
        for _ in range(2):
            root = self.table()
            self.roots.append(root)
            memory.write(root + 8 * table_index(PHYS_WINDOW, 4), window_pdpt | Pte.PRESENT | Pte.WRITABLE)
            memory.write(root + 8 * table_index(SHARED_REGION, 4),
                         shared_pdpt | Pte.PRESENT | Pte.WRITABLE | Pte.USER_ACCESSIBLE)
            self.fill(root, 4, 0, list(PRIVATE_SLOTS), root)


# -- random streams ------------------------------------------------------------------------------------------------


class StreamGenerator:
    """A random operation stream and its expected responses, from a model run alongside the generation."""

    def __init__(self, seed: int, config: MmuConfig) -> None:
        self.rng = random.Random(seed)
        self.machine = Machine(config)
        self.tables = TableBuilder(self.rng, Memory(config.mem_bytes), config.maxphyaddr)
        self.requests: list[Request] = []
        self.expected: list[tuple[int, int, int]] = []
        self.recent: list[int] = []  # pages of recent addresses, oldest first

    def issue(self, request: Request) -> tuple[int, int, int]:
        self.requests.append(request)
        self.expected.append(self.machine.execute(*request))
        return self.expected[-1]

    def boot(self) -> None:
        """Write the tables into RAM with paging off (8-byte physical stores of every non-zero word), enable."""
        self.tables.build()
        for addr in range(0, self.tables.memory.size, 8):
            value = self.tables.memory.read(addr)
            if value:
                self.issue(Request(Op.STORE, addr, 3, value))
        self.issue(Request(Op.CSR_WRITE, Csr.CR3, 3, self.tables.roots[0]))
        self.issue(Request(Op.CSR_WRITE, Csr.CR0, 3, CR0_PG))

    def address(self) -> int:
        """A virtual address near something the tables map (or nowhere, or non-canonical); half the time in a page
        used recently, so that translations are reused, hit and get evicted."""
        r = self.rng.random()
        if r < 0.5 and self.recent:
            return self.rng.choice(self.recent) | self.rng.randrange(PAGE_SIZE)
        if r < 0.52:
            return self.rng.getrandbits(64)  # mostly non-canonical
        if r < 0.55:
            addr = PHYS_WINDOW + self.rng.randrange(self.machine.memory.size)
        else:
            leaves = [m for m in self.tables.mappings if m.leaf]
            if self.rng.random() < 0.85:  # mostly the current address space's (or the shared) pages
                leaves = [m for m in leaves if m.root in (None, self.machine.cr3)] or leaves
            leaf = self.rng.choice(leaves)
            span = 1 << LEVEL_PAGE_SHIFT.get(leaf.level, 12)
            addr = leaf.vaddr + self.rng.choice((0, self.rng.randrange(span), span - 8, self.rng.randrange(PAGE_SIZE)))
        self.recent = [*self.recent[-(RECENT_PAGES - 1):], addr & ~(PAGE_SIZE - 1)]
        return addr

    def access(self) -> None:
        size = self.rng.randrange(4)
        addr = self.address()
        if self.rng.random() < 0.9:
            addr &= ~((1 << size) - 1)
        store = self.rng.random() < 0.4
        user = self.rng.random() < 0.35
        fetch = self.rng.random() < (0.02 if store else 0.2)  # a store marked as a fetch is a plain store
        if store and self.store_reaches_a_table(addr, user):
            store = False  # a data store must not rewrite a page table under cached translations
        op = Op.STORE if store else Op.LOAD
        self.issue(Request(op, addr, size, self.rng.getrandbits(64), user, fetch))
        if self.expected[-1][1] == Fault.PAGE and self.rng.random() < 0.3:
            self.issue(Request(Op.CSR_READ, Csr.CR2))
            self.issue(Request(Op.CSR_READ, Csr.PFEC))

    def store_reaches_a_table(self, addr: int, user: bool) -> bool:
        paddr = addr
        if self.machine.paging:
            if not is_canonical(addr):
                return False
            probe = Machine(self.machine.config)  # a copy: the probe's walk must not set A/D in the model
            probe.memory.data[:] = self.machine.memory.data
            probe.cr3 = self.machine.cr3
            result = probe.translate(addr, Access(True, user))
            if result.fault != Fault.NONE:
                return False
            paddr = result.paddr
        return paddr // PAGE_SIZE in self.tables.table_frames

    def edit(self) -> None:
        """Rewrite one entry through the window, then invalidate what could cache the old one."""
        mapping = self.rng.choice(self.tables.mappings)
        entry = self.machine.memory.read(mapping.entry_addr)
        change = self.rng.choice((Pte.PRESENT, Pte.WRITABLE, Pte.USER_ACCESSIBLE, Pte.NO_EXECUTE, Pte.ACCESSED,
                                  Pte.DIRTY * mapping.leaf, Pte.GLOBAL * (mapping.leaf and mapping.root is None)))
        self.issue(Request(Op.STORE, PHYS_WINDOW + mapping.entry_addr, 3, entry ^ change))
        if mapping.leaf:
            span = 1 << LEVEL_PAGE_SHIFT[mapping.level]
            self.issue(Request(Op.INVLPG, mapping.vaddr + self.rng.randrange(0, span, 8)))
        elif mapping.root is None or self.rng.random() < 0.5:
            self.issue(Request(Op.FLUSH, 0))
        else:
            self.issue(Request(Op.CSR_WRITE, Csr.CR3, 3, self.machine.cr3))  # private entries are never global

    def cpl3(self) -> bool:
        """Whether a privileged operation that nothing depends on comes from user mode (and so is GP)."""
        return self.rng.random() < 0.15

    def generate(self, operations: int) -> None:
        self.boot()
        roots = self.tables.roots
        while len(self.requests) < operations:
            r = self.rng.random()
            # flushes come every few dozen operations, so that translations live long enough to hit and be evicted
            if r < 0.90:
                self.access()
            elif r < 0.93:
                csr = self.rng.choice((Csr.CR0, Csr.CR2, Csr.CR3, Csr.PFEC, Csr.CFG_TLB_WAYS, 0x7FF))
                self.issue(Request(Op.CSR_READ, csr, user=self.cpl3()))
            elif r < 0.955:
                self.issue(Request(Op.INVLPG, self.address(), user=self.cpl3()))
            elif r < 0.96:
                self.issue(Request(self.rng.choice((6, 7)), self.address()))  # undefined op codes
            elif r < 0.965:
                self.issue(Request(Op.FLUSH, 0, user=self.cpl3()))
            elif r < 0.98:
                self.issue(Request(Op.CSR_WRITE, Csr.CR3, 3, self.rng.choice(roots), user=self.cpl3()))
            elif r < 0.995:
                self.edit()
            else:
                self.issue(Request(Op.CSR_WRITE, Csr.CR0, 3, 0))  # paging off: physical accesses, then on again
                for _ in range(self.rng.randrange(1, 6)):
                    self.access()
                self.issue(Request(Op.CSR_WRITE, Csr.CR0, 3, CR0_PG))


def generate_stream(seed: int, operations: int, config: MmuConfig) -> StreamGenerator:
    generator = StreamGenerator(seed, config)
    generator.generate(operations)
    return generator


# -- running and checking -----------------------------------------------------------------------------------------


@dataclass
class Run:
    """A backend's responses and events for a stream (what cosim.analysis.lockstep compares)."""

    backend: str
    responses: list[tuple[int, int, int]]
    events: list[AccessEvent]
    value: Any = None
    contexts: list[Any] = field(default_factory=list)


def run_stream(backend: str, config: MmuConfig, requests: list[Request]) -> Run:
    with open_backend(backend, config, trace=True) as sim:
        responses = [tuple(map(int, sim.transact(*request))) for request in requests]
        return Run(backend, responses, sim.drain_events())


def describe(request: Request) -> str:
    name = Op(request.op).name if request.op in DEFINED_OPS else f"op {request.op}"
    return (f"{name} addr={request.addr:#x} size={1 << request.size} wdata={request.wdata:#x} "
            f"user={int(request.user)} fetch={int(request.fetch)}")


def first_model_divergence(seed: int, stream: StreamGenerator, run: Run) -> str | None:
    """A report of the first response that differs from the model's, with the operations before it."""
    for seq, (got, want) in enumerate(zip(run.responses, stream.expected, strict=True)):
        if got != want:
            history = "\n".join(f"    {i}: {describe(stream.requests[i])} -> {stream.expected[i]}"
                                for i in range(max(0, seq - 6), seq))
            return (f"seed {seed}: {run.backend} diverges from the model at operation {seq}: "
                    f"{describe(stream.requests[seq])}\n  (rdata, fault, errcode) = {got}, model {want}\n"
                    f"  preceding operations:\n{history}")
    return None
