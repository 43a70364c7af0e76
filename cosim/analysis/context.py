"""Firmware contexts: what the kernel was doing when the MMU saw an operation.

The firmware names what it is doing with `Cpu.context(label)`; a run records those as spans (label, depth, and the
half-open range [start_seq, end_seq) of the operation numbers issued inside), or, streamed, as a table of the
distinct context paths (`cosim.stream.ContextTable`). Joining events to contexts by `seq` tells, for every load and
store, which kernel operation caused it ("many_boxes/Box::new/alloc(8, 8)"): that is what turns a TLB trace into an
explanation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from hdl.protocol import AccessEvent

ALLOCATOR_KINDS = frozenset(("alloc", "dealloc", "realloc", "alloc_zeroed"))  # the global allocator's calls
INIT_HEAP = "init_heap"  # the firmware context after which the kernel heap exists
UNTAGGED = "(untagged)"  # the phase and kind of operations issued outside every context


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
