"""Lockstep cross-checks: one workload on several backends must produce the same operations, event by event.

Each backend runs the workload separately with tracing on; their event lists are then compared position by
position against the first backend's. An `AccessEvent` carries both the response (data, fault, error code) and
what the TLB and walker did, so one comparison covers both. The cycle-free `reference` model has no timing, so
TIMING_FIELDS are skipped whenever it takes part. The first divergence is reported with the firmware context
that issued the operation and the operations just before it: usually enough to see which rule was broken.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Protocol

from cosim.analysis.context import SpanLike, attribute
from cosim.analysis.summary import format_table
from cosim.analysis.trace import describe
from hdl.protocol import TIMING_FIELDS, AccessEvent, Fault, Op

HISTORY = 5  # operations shown before the divergent one


class TracedRun(Protocol):
    """What a comparison needs of `cosim.program.RunResult`."""

    backend: str
    value: Any
    events: list[AccessEvent]
    contexts: list[SpanLike]


def compared_fields(backends: Sequence[str]) -> tuple[str, ...]:
    """The AccessEvent fields that must agree between `backends`."""
    skipped = TIMING_FIELDS if "reference" in backends else ()
    return tuple(name for name in AccessEvent._fields if name not in skipped)


@dataclass(frozen=True)
class Divergence:
    """The first point where backend `backends[1]` disagrees with `backends[0]`."""

    backends: tuple[str, str]
    seq: int | None  # None: every event agreed but the programs returned different values
    records: tuple[AccessEvent | None, AccessEvent | None]  # None: that backend issued no such operation
    fields: tuple[str, ...]  # the fields that differ (all of `compared` when a record is missing)
    compared: tuple[str, ...]
    path: str  # the firmware context of the operation, from the first backend's spans
    preceding: tuple[tuple[AccessEvent, str], ...]  # the operations before it, with their contexts
    values: tuple[Any, Any]

    def report(self) -> str:
        """A multi-line explanation for a person."""
        a, b = self.backends
        if self.seq is None:
            return (f"{a} and {b} agree on every operation but the program returned different values:\n"
                    f"  {a}: {self.values[0]!r}\n  {b}: {self.values[1]!r}")
        first = next(r for r in self.records if r is not None)
        lines = [f"{a} and {b} diverge at operation {self.seq:,}: {describe(first)}",
                 f"  issued by: {self.path or '(no firmware context)'}"]
        if None in self.records:
            missing = self.backends[self.records.index(None)]
            lines.append(f"  {missing} has no operation {self.seq:,}: it issued fewer operations")
        rows = [[name, *(_cell(r, name) for r in self.records), "≠" if name in self.fields else ""]
                for name in self.compared]
        lines += ["", _indent(format_table(("field", a, b, ""), rows)), ""]
        if self.preceding:
            lines.append(f"  preceding operations ({a}), with their context when it changes:")
            shown = None
            for event, path in self.preceding:
                lines.append(f"    {describe(event)}" + (f"   [{path or '-'}]" if path != shown else ""))
                shown = path
        return "\n".join(lines)


def first_divergence(runs: Sequence[TracedRun], *, history: int = HISTORY) -> Divergence | None:
    """The earliest divergence among `runs`, or None when all agree.

    Every run is compared with `runs[0]`; when that is the clock-less reference, the RTL runs are also compared
    with the first of them, timing included, so that cycle counts are still cross-checked.
    """
    if len(runs) < 2:
        raise ValueError("a lockstep check needs at least two runs")
    pairs = [(runs[0], other) for other in runs[1:]]
    timed = [run for run in runs[1:] if run.backend != "reference"]
    if runs[0].backend == "reference":
        pairs += [(timed[0], other) for other in timed[1:]]
    found = [
        divergence
        for a, b in pairs
        if (divergence := _compare_pair(a, b, compared_fields((a.backend, b.backend)), history)) is not None
    ]
    return min(found, key=lambda d: float("inf") if d.seq is None else d.seq, default=None)


def _compare_pair(a: TracedRun, b: TracedRun, fields: tuple[str, ...], history: int) -> Divergence | None:
    project = itemgetter(*(AccessEvent._fields.index(name) for name in fields))
    pairs = enumerate(zip(a.events, b.events, strict=False))  # unequal lengths are handled below
    seq = next((i for i, (x, y) in pairs if project(x) != project(y)), None)
    if seq is None and len(a.events) != len(b.events):
        seq = min(len(a.events), len(b.events))
    if seq is None:
        if a.value == b.value:
            return None
        return Divergence((a.backend, b.backend), None, (None, None), (), fields, "", (), (a.value, b.value))
    records = tuple(events[seq] if seq < len(events) else None for events in (a.events, b.events))
    if None in records:
        differing = fields
    else:
        differing = tuple(name for name in fields if getattr(records[0], name) != getattr(records[1], name))
    reference_events = a.events if seq < len(a.events) else b.events
    reference_spans = a.contexts if seq < len(a.events) else b.contexts
    window = reference_events[max(0, seq - history):seq + 1]
    contexts = attribute(window, [s for s in reference_spans if s.start_seq <= seq])
    paths = [c.path if c else "" for c in contexts]
    return Divergence(
        (a.backend, b.backend), seq, (records[0], records[1]), differing, fields, paths[-1],
        tuple(zip(window[:-1], paths[:-1], strict=True)), (a.value, b.value),
    )


def _cell(record: AccessEvent | None, name: str) -> str:
    if record is None:
        return "—"
    value = getattr(record, name)
    if name == "op":
        return Op(value).name
    if name == "fault":
        return Fault(value).name
    if name == "evicted_vpn":
        return "none" if value < 0 else f"{value:#x}"
    return f"{value:#x}" if name in ("vaddr", "paddr", "data") else str(value)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
