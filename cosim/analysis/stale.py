"""The stale-TLB detector: accesses that used a translation the page tables no longer give.

x86 leaves TLB coherence to software: after changing a page-table entry the kernel must `invlpg` the page
(x86_64's `MapperFlush::flush()`), or the TLB keeps using the old translation. Forgetting it (`.ignore()`)
is a classic bug that no fault reports. This detector replays a trace: it keeps a shadow of physical RAM
built from the STORE events (RAM starts as zeros, and the kernel writes its page tables with stores), and
for each access with paging on asks the reference walker what the page tables say *now*. When the hardware's
outcome (physical address, or fault) differs, the access used a stale translation; the culprit is the latest
store to one of the page-table entries that walk read. Hardware A/D write-backs are not in the shadow: they
change no translation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cosim.analysis.context import SpanLike, attribute
from cosim.analysis.trace import describe
from cosim.stream import batches_of

if TYPE_CHECKING:
    from cosim.backends.reference import Translation
    from cosim.stream import ContextTable, EventBatch
from hdl.protocol import CR0_PG, AccessEvent, Csr, ErrorCode, Fault, MmuConfig, Op

_LOAD, _STORE, _CSR_WRITE = int(Op.LOAD), int(Op.STORE), int(Op.CSR_WRITE)


@dataclass(frozen=True)
class Outcome:
    """How an access ends as far as translation decides: a fault kind, or success at a physical address."""

    fault: Fault
    paddr: int  # meaningful only without fault

    def __str__(self) -> str:
        return f"{self.paddr:#x}" if self.fault == Fault.NONE else f"a {self.fault.name} fault"


@dataclass(frozen=True)
class PteWrite:
    """The store that last changed a page-table entry."""

    seq: int
    paddr: int  # of the entry
    value: int  # the entry after the store
    path: str  # firmware context of the store


@dataclass(frozen=True)
class StaleAccess:
    """An access whose outcome the current page tables contradict."""

    event: AccessEvent
    path: str
    used: Outcome  # what the hardware did
    expected: Outcome  # what a walk of the page tables in RAM gives
    source: str  # where the hardware got its translation: "TLB hit", "PWC-assisted walk", "walk"
    culprit: PteWrite | None

    def report(self) -> str:
        lines = [f"stale translation at {describe(self.event)}",
                 f"  issued by: {self.path or '(no firmware context)'}",
                 f"  the hardware ({self.source}) used {self.used}; the page tables now give {self.expected}"]
        if self.culprit is None:
            lines.append("  no store to the page-table entries of this address was seen")
        else:
            c = self.culprit
            lines.append(f"  made stale by the store #{c.seq} of {c.value:#x} to the page-table entry at "
                         f"{c.paddr:#x}, in {c.path or '(no firmware context)'}, with no invlpg/flush since")
        return "\n".join(lines)


class _ShadowRam:
    """Physical RAM as the stores left it: 8-byte words, zero until written, each with its last writer."""

    def __init__(self) -> None:
        self.words: dict[int, int] = {}
        self.writers: dict[int, tuple[int, int]] = {}  # word address -> (seq, context id) of its last store

    def store(self, paddr: int, size: int, data: int, writer: tuple[int, int]) -> int:
        word = paddr & ~7
        shift = (paddr & 7) * 8
        mask = ((1 << (8 * size)) - 1) << shift
        self.words[word] = (self.words.get(word, 0) & ~mask) | ((data << shift) & mask)
        self.writers[word] = writer
        return word

    def read_u64(self, paddr: int) -> int:
        return self.words.get(paddr, 0)


WalkFn = Callable[..., "Translation"]  # the signature of cosim.backends.reference.walk


class StaleDetector:
    """Finds the accesses that used a stale translation as a run's events stream by (an EventSink): `found`
    keeps the first `keep` of them (all with None), `count` counts them all, and `on_found` hears of each.

    Events must be a complete trace from reset, in seq order. `walk` defaults to `cosim.backends.reference.walk`.
    """

    def __init__(
        self, config: MmuConfig, *, walk: WalkFn | None = None, keep: int | None = None,
        on_found: Callable[[StaleAccess], None] | None = None,
    ) -> None:  # fmt: skip
        if walk is None:
            from cosim.backends.reference import walk
        self.config = config
        self.found: list[StaleAccess] = []
        self.count = 0
        self._walk = walk
        self._keep = keep
        self._on_found = on_found
        self._ram = _ShadowRam()
        self._cr3 = 0
        self._paging = False
        self._table_words: set[int] = set()  # words some walk read: a store to one invalidates the cache
        self._cache: dict[tuple[int, bool, bool, bool], tuple[Outcome, tuple[int, ...]]] = {}

    def write(self, batch: EventBatch) -> None:
        from cosim.analysis.trace import _rows

        config, ram, cache = self.config, self._ram, self._cache
        for event, tag in zip(_rows(batch), batch.context.tolist(), strict=True):
            op, fault = event.op, event.fault
            if op == _CSR_WRITE and fault == Fault.NONE:
                if event.vaddr == Csr.CR3:
                    self._cr3 = event.data
                    cache.clear()
                elif event.vaddr == Csr.CR0:
                    self._paging = bool(event.data & CR0_PG)
                continue
            if op not in (_LOAD, _STORE) or fault in (Fault.GP, Fault.ALIGN):
                continue  # no translation took part
            if self._paging:
                user = fetch = False  # a successful access of any mode would succeed in supervisor data mode too
                if fault == Fault.PAGE:
                    user, fetch = bool(event.errcode & ErrorCode.U), bool(event.errcode & ErrorCode.I)
                key = (event.vaddr >> 12, op == _STORE, user, fetch)
                if key not in cache:
                    cache[key] = _walk(self._walk, ram, self._cr3, event.vaddr & ~0xFFF, key[1:], config)
                    self._table_words.update(cache[key][1])
                expected, read = cache[key]
                if expected.fault == Fault.NONE:
                    paddr = expected.paddr | (event.vaddr & 0xFFF)
                    expected = Outcome(Fault.BUS, 0) if paddr + event.size > config.mem_bytes else Outcome(
                        Fault.NONE, paddr)
                used = Outcome(Fault(fault), event.paddr)
                if used.fault != expected.fault or (used.fault == Fault.NONE and used.paddr != expected.paddr):
                    self._report(_stale(event, _path(batch.table, tag), used, expected, read, ram, batch.table))
            if op == _STORE and fault == Fault.NONE:
                paddr = event.paddr if self._paging else event.vaddr
                if ram.store(paddr, event.size, event.data, (event.seq, tag)) in self._table_words:
                    cache.clear()

    def _report(self, stale: StaleAccess) -> None:
        self.count += 1
        if self._keep is None or len(self.found) < self._keep:
            self.found.append(stale)
        if self._on_found is not None:
            self._on_found(stale)


def find_stale(
    events: Sequence[AccessEvent], spans: Sequence[SpanLike], config: MmuConfig, *, walk: WalkFn | None = None
) -> list[StaleAccess]:
    """Every access of `events` that used a stale translation, oldest first (none for correct firmware).

    `walk` defaults to `cosim.backends.reference.walk`; events must be a complete trace from reset, in seq order.
    """
    detector = StaleDetector(config, walk=walk)
    for batch in batches_of(events, attribute(events, spans)):
        detector.write(batch)
    return detector.found


def _walk(
    walk: WalkFn, ram: _ShadowRam, cr3: int, page: int, mode: tuple[bool, bool, bool], config: MmuConfig
) -> tuple[Outcome, tuple[int, ...]]:
    """The outcome for the page at `page`, and the addresses of the entries the walk read, top level first."""
    read: list[int] = []

    def read_u64(paddr: int) -> int:
        read.append(paddr)
        return ram.read_u64(paddr)

    write, user, fetch = mode
    translation = walk(read_u64, cr3, page, write=write, user=user, fetch=fetch,
                       maxphyaddr=config.maxphyaddr, mem_bytes=config.mem_bytes)
    fault = Fault(translation.fault)
    base = translation.paddr & ~0xFFF if fault == Fault.NONE else 0
    return Outcome(fault, base), tuple(read)


def _stale(
    event: AccessEvent, path: str, used: Outcome, expected: Outcome, read: tuple[int, ...], ram: _ShadowRam,
    table: ContextTable,
) -> StaleAccess:
    written = [word for word in read if word in ram.writers]
    culprit = None
    if written:
        word = max(written, key=ram.writers.__getitem__)  # the latest store: writers are (seq, context)
        seq, tag = ram.writers[word]
        culprit = PteWrite(seq, word, ram.read_u64(word), _path(table, tag))
    if event.tlb_hit and not event.walk_levels:
        source = "TLB hit"
    elif event.pwc_hits:
        source = "PWC-assisted walk"
    else:
        source = "walk"
    return StaleAccess(event, path, used, expected, source, culprit)


def _path(table: ContextTable, tag: int) -> str:
    return table.contexts[tag].path if tag >= 0 else ""
