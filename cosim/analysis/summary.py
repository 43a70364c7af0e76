"""TLB summaries of a traced run: per phase (top-level contexts) and per kind of firmware operation.

Per phase, an event counts in the phase it happened in, so the phases add up to the whole run. Per kind, each
event counts once under its innermost context ("self", so the kinds add up too) and once under every kind on
its path ("incl."): `Box::new` then shows both what it did itself and what the allocator did for it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cosim.analysis.context import UNTAGGED, Context, SpanLike, kind_of
from cosim.outputs import write_text
from cosim.stream import BATCH_EVENTS, ContextTable, EventBatch, batches_of
from hdl.protocol import AccessEvent, MmuConfig, Op, TlbPolicy

_LOAD, _STORE = int(Op.LOAD), int(Op.STORE)
_MEMORY_OPS = (_LOAD, _STORE)


@dataclass
class TlbStats:
    """What the TLB and the page walker did for a set of operations."""

    calls: int = 0  # spans of this phase/kind (0 for the totals)
    operations: int = 0  # every protocol operation, CSR and TLB maintenance included
    memory_ops: int = 0  # loads and stores
    tlb_hits: int = 0
    tlb_misses: int = 0
    walks: int = 0
    pte_reads: int = 0
    walk_cycles: int = 0
    ad_writes: int = 0
    faults: int = 0

    @property
    def hit_rate(self) -> float | None:
        """hits / (hits + misses); None when the TLB was never looked up (paging off, or no memory access)."""
        lookups = self.tlb_hits + self.tlb_misses
        return self.tlb_hits / lookups if lookups else None

    def add(self, event: AccessEvent) -> None:
        self.operations += 1
        self.memory_ops += event.op in _MEMORY_OPS
        self.tlb_hits += bool(event.tlb_hit)
        self.tlb_misses += bool(event.tlb_miss)
        self.walks += event.walk_levels > 0
        self.pte_reads += event.walk_levels
        self.walk_cycles += event.walk_cycles
        self.ad_writes += event.ad_writes
        self.faults += event.fault != 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hit_rate": self.hit_rate}


@dataclass
class KindStats:
    """One kind of firmware operation: its own operations, and all the memory operations issued inside it."""

    kind: str
    own: TlbStats = field(default_factory=TlbStats)
    inclusive_memory_ops: int = 0


@dataclass
class Summary:
    total: TlbStats
    phases: dict[str, TlbStats]  # in order of first appearance; a label repeated at top level is one phase
    kinds: list[KindStats]  # most memory operations (inclusive) first

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total.as_dict(),
            "phases": [{"phase": name, **stats.as_dict()} for name, stats in self.phases.items()],
            "kinds": [
                {"kind": k.kind, **k.own.as_dict(), "inclusive_memory_ops": k.inclusive_memory_ops}
                for k in self.kinds
            ],
        }


_READ = ("op", "tlb_hit", "tlb_miss", "walk_levels", "walk_cycles", "ad_writes", "fault")
_STAT_FIELDS = ("operations", "memory_ops", "tlb_hits", "tlb_misses", "walks", "pte_reads", "walk_cycles",
                "ad_writes", "faults")


class SummaryBuilder:
    """A Summary fed batch by batch (an EventSink): the TlbStats of each context, added up by phase and kind at
    the end. Memory grows with the distinct contexts, not with the events."""

    def __init__(self) -> None:
        self._stats = np.zeros((len(_STAT_FIELDS), 1), dtype=np.int64)  # column 0: outside every context

    def write(self, batch: EventBatch) -> None:
        """Count the events of `batch` under their contexts."""
        width = len(batch.table) + 1
        if width > self._stats.shape[1]:
            grown = np.zeros((len(_STAT_FIELDS), max(width, 2 * self._stats.shape[1])), dtype=np.int64)
            grown[:, :self._stats.shape[1]] = self._stats
            self._stats = grown
        columns = {name: np.asarray(batch.columns[name]) for name in _READ}
        for start in range(0, len(batch), BATCH_EVENTS):  # a batch's sums stay exact in bincount's float64
            part = slice(start, start + BATCH_EVENTS)
            slots = batch.context[part].astype(np.intp) + 1
            op, levels = columns["op"][part], columns["walk_levels"][part]
            values = (
                None, (op == _LOAD) | (op == _STORE), columns["tlb_hit"][part], columns["tlb_miss"][part],
                levels > 0, levels, columns["walk_cycles"][part], columns["ad_writes"][part],
                columns["fault"][part] != 0,
            )  # in _STAT_FIELDS order
            for row, weights in enumerate(values):
                counts = np.bincount(slots, weights=weights, minlength=width)
                self._stats[row, :width] += counts.astype(np.int64) if weights is not None else counts

    def summary(self, table: ContextTable, phase_calls: dict[str, int], kind_calls: dict[str, int]) -> Summary:
        """The Summary of everything written; `phase_calls` (top-level spans per label, in order of first
        appearance) and `kind_calls` (spans per kind) come from the spans, e.g. `SpanCounts`."""
        stats = self._stats[:, :len(table) + 1].T.tolist()
        stats += [[0] * len(_STAT_FIELDS)] * (len(table) + 1 - len(stats))  # contexts no batch has seen
        total = TlbStats()
        phases = {label: TlbStats(calls=calls) for label, calls in phase_calls.items()}
        kinds = {kind: KindStats(kind, TlbStats(calls=calls)) for kind, calls in kind_calls.items()}
        contexts: list[Context | None] = [None, *table.contexts]
        for context, row in zip(contexts, stats, strict=True):
            if not row[0]:
                continue
            _add(total, row)
            if context is None:
                _add(phases.setdefault(UNTAGGED, TlbStats()), row)
                _add(kinds.setdefault(UNTAGGED, KindStats(UNTAGGED)).own, row)
                continue
            _add(phases[context.phase], row)
            _add(kinds[context.kind].own, row)
            for kind in context.kinds:
                kinds[kind].inclusive_memory_ops += row[1]
        if UNTAGGED in phases:  # it comes after the phases the spans name, as it did event by event
            phases[UNTAGGED] = phases.pop(UNTAGGED)
        ranked = sorted(kinds.values(), key=lambda k: (-k.inclusive_memory_ops, -k.own.operations, k.kind))
        return Summary(total, phases, ranked)


def _add(stats: TlbStats, row: Sequence[int]) -> None:
    for name, value in zip(_STAT_FIELDS, row, strict=True):
        setattr(stats, name, getattr(stats, name) + value)


def summarize(
    events: Sequence[AccessEvent], contexts: Sequence[Context | None], spans: Sequence[SpanLike]
) -> Summary:
    """Totals, phases and kinds of a run held in lists; `contexts` comes from
    `cosim.analysis.context.attribute(events, spans)`. (A streamed run feeds a SummaryBuilder instead.)"""
    builder = SummaryBuilder()
    table = ContextTable()  # the batches' (an empty one when there are no events)
    for batch in batches_of(events, contexts):
        builder.write(batch)
        table = batch.table
    base_depth = min((s.depth for s in spans), default=0)
    phase_calls: dict[str, int] = {}
    kind_calls: dict[str, int] = {}
    for span in sorted(spans, key=lambda s: (s.start_seq, s.depth)):
        if span.depth == base_depth:
            phase_calls[span.label] = phase_calls.get(span.label, 0) + 1
        kind = kind_of(span.label)
        kind_calls[kind] = kind_calls.get(kind, 0) + 1
    return builder.summary(table, phase_calls, kind_calls)


# -- presentation --------------------------------------------------------------------------------------------

_STAT_HEADERS = (
    "memory ops", "TLB hits", "misses", "hit rate", "walks", "PTE reads", "walk cycles", "A/D writes",
)


def percent(rate: float | None) -> str:
    """"99.8 %"; never "100.0 %" for a rate below 1, so that a rare miss stays visible; "—" for no rate."""
    if rate is None:
        return "—"
    text = f"{100 * rate:.1f}"
    return f"{min(100 * rate, 99.99):.2f} %" if text == "100.0" and rate < 1 else f"{text} %"


def _stat_cells(stats: TlbStats, *, cycles: bool = True) -> list[str]:
    cells = [
        f"{stats.memory_ops:,}", f"{stats.tlb_hits:,}", f"{stats.tlb_misses:,}", percent(stats.hit_rate),
        f"{stats.walks:,}", f"{stats.pte_reads:,}", f"{stats.walk_cycles:,}", f"{stats.ad_writes:,}",
    ]
    return cells if cycles else cells[:6] + cells[7:]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, footer: Sequence[str] = ()) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned, rules under the header and
    above the footer."""
    body = [list(r) for r in rows] + ([list(footer)] if footer else [])
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *body, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        cells = (f"{c:>{w}}" for c, w in zip(rest, widths[1:], strict=True))
        return "  ".join([f"{first:<{widths[0]}}", *cells]).rstrip()

    rule = "  ".join("─" * w for w in widths)
    lines = [line(headers), rule, *(line(r) for r in rows)]
    if footer:
        lines += [rule, line(footer)]
    return "\n".join(lines)


def phase_table(summary: Summary) -> str:
    rows = [[name, f"{s.operations:,}", *_stat_cells(s)] for name, s in summary.phases.items()]
    footer = ["total", f"{summary.total.operations:,}", *_stat_cells(summary.total)]
    return format_table(("phase", "operations", *_STAT_HEADERS), rows, footer=footer)


def kind_table(summary: Summary, *, limit: int | None = 15) -> str:
    """Kinds with the most memory operations first; `limit` keeps a teaching printout short (None: all).
    Walk cycles are left to the phase table and summary.json, to keep the table within 120 columns."""
    shown = summary.kinds if limit is None else summary.kinds[:limit]
    rows = [[k.kind, f"{k.own.calls:,}", f"{k.inclusive_memory_ops:,}", *_stat_cells(k.own, cycles=False)]
            for k in shown]
    headers = ("operation", "calls", "mem ops incl.", "mem ops self",
               *(h for h in _STAT_HEADERS[1:] if h != "walk cycles"))
    table = format_table(headers, rows)
    hidden = len(summary.kinds) - len(shown)
    return table + (f"\n… and {hidden} more kinds in summary.json" if hidden > 0 else "")


def write_json(path: Path, summary: Summary, *, workload: str, backend: str, config: MmuConfig,
               wall_s: float | None = None, allocator: str | None = None) -> Path:
    """`summary.json`: what ran (workload, backend, MMU configuration, global allocator: None when the program
    has its own, as demo-dummy's Dummy) and the summary's numbers."""
    config_fields = {**config.fields(), "tlb_policy": TlbPolicy(config.tlb_policy).name.lower()}
    document = {"workload": workload, "backend": backend, "config": config_fields, "allocator": allocator,
                "wall_s": wall_s, **summary.as_dict()}
    return write_text(path, json.dumps(document, indent=2) + "\n")
