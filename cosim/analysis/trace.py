"""Per-operation TLB traces: each `AccessEvent` tagged with the nested firmware context that issued it.

The firmware names what it is doing with `Cpu.context(label)`; the runner records those as `Span`s (label,
depth, and the half-open range [start_seq, end_seq) of operation numbers issued inside). Joining events to
spans by `seq` tells, for every load and store, which kernel operation caused it
("many_boxes/Box::new/alloc(8, 8)"): that is what turns a TLB trace into an explanation. Traces are written
as JSON Lines and as CSV with the same columns; addresses and data are hex strings, so that spreadsheets keep
all 64 bits.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from hdl.protocol import AccessEvent, Fault, Op

UNTAGGED = "(untagged)"  # the phase and kind of operations issued outside every context
_BATCH = 4096  # rows per write() call


class SpanLike(Protocol):
    """What a trace needs of `cosim.program.Span`."""

    label: str
    depth: int
    start_seq: int
    end_seq: int


def kind_of(label: str) -> str:
    """The kind of a firmware operation: its label without arguments ("alloc(8, 8)" -> "alloc")."""
    return label.split("(", 1)[0].strip() or label


@dataclass(frozen=True)
class Context:
    """Where an operation came from: its innermost span and everything that span is nested in."""

    label: str  # innermost label, arguments included
    path: str  # labels from the outermost span down, joined by "/"
    kind: str  # kind_of(label)
    phase: str  # the top-level span's label (phases: boot, init_heap, each test)
    kinds: frozenset[str]  # the kinds of every span on the path, for inclusive per-kind counts


def attribute(events: Sequence[AccessEvent], spans: Sequence[SpanLike]) -> list[Context | None]:
    """The context of each event (None outside every span), in one sweep over events and spans sorted by seq.

    Spans must nest properly (the firmware's `with cpu.context(...)` guarantees it); an empty span (no
    operation inside) owns no event. `events` must be in seq order, as backends deliver them.
    """
    order = sorted(range(len(spans)), key=lambda i: (spans[i].start_seq, spans[i].depth))
    base_depth = min((s.depth for s in spans), default=0)
    contexts: list[Context | None] = [None] * len(spans)
    stack: list[int] = []  # span indices, outermost first
    result: list[Context | None] = []
    pos = 0
    for event in events:
        seq = event.seq
        while pos < len(order) and spans[order[pos]].start_seq <= seq:
            index = order[pos]
            span = spans[index]
            del stack[span.depth - base_depth:]
            parent = contexts[stack[-1]] if stack else None
            contexts[index] = _context(span, parent)
            stack.append(index)
            pos += 1
        while stack and spans[stack[-1]].end_seq <= seq:
            stack.pop()
        result.append(contexts[stack[-1]] if stack else None)
    return result


def _context(span: SpanLike, parent: Context | None) -> Context:
    kind = kind_of(span.label)
    if parent is None:
        return Context(span.label, span.label, kind, span.label, frozenset((kind,)))
    path = f"{parent.path}/{span.label}"
    return Context(span.label, path, kind, parent.phase, parent.kinds | {kind})


# -- files ---------------------------------------------------------------------------------------------------

COLUMNS = (
    "seq", "cycle", "op", "vaddr", "paddr", "size", "data", "tlb_hit", "tlb_miss", "evicted_vpn",
    "walk_levels", "walk_cycles", "pwc_hits", "pte_reads", "ad_writes", "fault", "errcode", "label", "path",
)
_HEX = frozenset(("vaddr", "paddr", "data", "evicted_vpn"))
_BOOL = frozenset(("tlb_hit", "tlb_miss"))


class TraceRow(NamedTuple):
    """One line of a trace file read back: the event and the context it was tagged with ("" if none)."""

    event: AccessEvent
    label: str
    path: str


_OP_NAMES = {int(op): op.name for op in Op}
_FAULT_NAMES = {int(fault): fault.name for fault in Fault}


def _cells(event: AccessEvent, no_eviction: str | None) -> tuple[Any, ...]:
    """The event's columns of COLUMNS (all but label and path), as written to both file formats."""
    e = event
    return (
        e.seq, e.cycle, _OP_NAMES[e.op], hex(e.vaddr), hex(e.paddr), e.size, hex(e.data),
        bool(e.tlb_hit), bool(e.tlb_miss), no_eviction if e.evicted_vpn < 0 else hex(e.evicted_vpn),
        e.walk_levels, e.walk_cycles, e.pwc_hits,
        e.walk_levels,  # pte_reads: every level the walk visits is one page-table-entry read
        e.ad_writes, _FAULT_NAMES[e.fault], e.errcode,
    )  # fmt: skip


# A JSON object per line, built by formatting rather than json.dumps (traces run to millions of lines): every
# value but label and path is a number, a bool or a name/hex string that needs no escaping.
_QUOTED = frozenset(("op", "vaddr", "paddr", "data", "fault"))
_JSON_LINE = "{" + ", ".join(f'"{n}": ' + ('"%s"' if n in _QUOTED else "%s") for n in COLUMNS) + "}\n"
_JSON_BOOL = {False: "false", True: "true"}


def _parse(record: dict[str, Any]) -> TraceRow:
    """A record of either format read back (CSV gives strings, JSON typed values)."""

    def value(name: str) -> int:
        raw = record[name]
        if name in _HEX:
            return -1 if raw in (None, "") else int(raw, 16)
        if name in _BOOL:
            return raw if isinstance(raw, bool) else raw == "True"
        return int(raw)

    fields = {name: value(name) for name in AccessEvent._fields if name not in ("op", "fault")}
    event = AccessEvent(**fields, op=Op[record["op"]], fault=Fault[record["fault"]])
    return TraceRow(event, record["label"] or "", record["path"] or "")


def write_jsonl(path: Path, events: Sequence[AccessEvent], contexts: Sequence[Context | None]) -> Path:
    """One JSON object per line, keys in COLUMNS order; `evicted_vpn` is null when nothing was evicted."""
    encoded: dict[int, tuple[str, str]] = {}  # id(context) -> its label and path as JSON strings

    def line(event: AccessEvent, context: Context | None) -> str:
        names = encoded.get(id(context))
        if names is None:
            names = encoded[id(context)] = (json.dumps(context.label if context else ""),
                                            json.dumps(context.path if context else ""))
        cells = list(_cells(event, "null"))
        cells[7], cells[8] = _JSON_BOOL[cells[7]], _JSON_BOOL[cells[8]]
        if event.evicted_vpn >= 0:
            cells[9] = f'"{cells[9]}"'
        return _JSON_LINE % (*cells, *names)

    with path.open("w") as out:
        for batch in _batches(events, contexts):
            out.write("".join(line(e, c) for e, c in batch))
    return path


def write_csv(path: Path, events: Sequence[AccessEvent], contexts: Sequence[Context | None]) -> Path:
    """A header line with COLUMNS, then one line per event; `evicted_vpn` is empty when nothing was evicted."""
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for batch in _batches(events, contexts):
            writer.writerows((*_cells(e, ""), *((c.label, c.path) if c else ("", ""))) for e, c in batch)
    return path


def read_trace(path: Path) -> list[TraceRow]:
    """A trace written by `write_jsonl` (".jsonl") or `write_csv` (".csv")."""
    with path.open(newline="") as src:
        if path.suffix == ".csv":
            return [_parse(record) for record in csv.DictReader(src)]
        return [_parse(json.loads(line)) for line in src if line.strip()]


def _batches(
    events: Sequence[AccessEvent], contexts: Sequence[Context | None]
) -> Iterator[Iterable[tuple[AccessEvent, Context | None]]]:
    for start in range(0, len(events), _BATCH):
        yield zip(events[start:start + _BATCH], contexts[start:start + _BATCH], strict=True)


def describe(event: AccessEvent) -> str:
    """One line for a person: "#812 STORE 8 B 0x444444440000 -> 0x24000, TLB miss, walk of 4 PTE reads"."""
    op = Op(event.op)
    if op in (Op.LOAD, Op.STORE):
        text = f"#{event.seq} {op.name} {event.size} B {event.vaddr:#x}"
        if event.fault == Fault.NONE:
            text += f" -> {event.paddr:#x}"
    elif op in (Op.CSR_READ, Op.CSR_WRITE):
        text = f"#{event.seq} {op.name} {event.vaddr:#x} = {event.data:#x}"
    else:
        text = f"#{event.seq} {op.name} {event.vaddr:#x}" if op == Op.INVLPG else f"#{event.seq} {op.name}"
    if event.tlb_hit or event.tlb_miss:
        text += ", TLB hit" if event.tlb_hit else ", TLB miss"
    if event.walk_levels:
        reads = "1 PTE read" if event.walk_levels == 1 else f"{event.walk_levels} PTE reads"
        text += f", walk of {reads}" + (" from the PWC" if event.pwc_hits else "")
    if event.fault != Fault.NONE:
        text += f", {Fault(event.fault).name} fault"
        if event.errcode:
            text += f" (error code {event.errcode:#x})"
    return text
