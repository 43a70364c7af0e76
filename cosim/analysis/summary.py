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

from cosim.analysis.trace import UNTAGGED, Context, SpanLike, kind_of
from hdl.protocol import AccessEvent, MmuConfig, Op, TlbPolicy

_MEMORY_OPS = (int(Op.LOAD), int(Op.STORE))


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


def summarize(
    events: Sequence[AccessEvent], contexts: Sequence[Context | None], spans: Sequence[SpanLike]
) -> Summary:
    """Totals, phases and kinds of a run; `contexts` comes from `cosim.analysis.trace.attribute(events, spans)`."""
    total = TlbStats()
    phases: dict[str, TlbStats] = {}
    kinds: dict[str, KindStats] = {}
    base_depth = min((s.depth for s in spans), default=0)
    for span in sorted(spans, key=lambda s: (s.start_seq, s.depth)):
        if span.depth == base_depth:
            phases.setdefault(span.label, TlbStats()).calls += 1
        kind = kind_of(span.label)
        kinds.setdefault(kind, KindStats(kind)).own.calls += 1
    for event, context in zip(events, contexts, strict=True):
        total.add(event)
        if context is None:
            phases.setdefault(UNTAGGED, TlbStats()).add(event)
            kinds.setdefault(UNTAGGED, KindStats(UNTAGGED)).own.add(event)
            continue
        phases[context.phase].add(event)
        kinds[context.kind].own.add(event)
        if event.op in _MEMORY_OPS:
            for kind in context.kinds:
                kinds[kind].inclusive_memory_ops += 1
    ranked = sorted(kinds.values(), key=lambda k: (-k.inclusive_memory_ops, -k.own.operations, k.kind))
    return Summary(total, phases, ranked)


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
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
