"""Streamed traces: a traced run's events in columnar batches, each event tagged with its firmware context, handed to
a sink while the run goes on, so that no run holds all its events or all its context spans in memory.

A batch (`EventBatch`) is the events of about BATCH_EVENTS consecutive operations as columns (a numpy structured
array, or any mapping of AccessEvent field names to arrays: the verilator backend's buffer as it comes from C), and
per event the id of its innermost firmware context, -1 outside every context. Context ids index the run's
`ContextTable`, where each distinct context path is stored once: a run of millions of operations opens millions
of contexts, but they have a few thousand distinct paths.

`ContextTracker` is the `ContextListener` of a streamed run: it interns the contexts the firmware opens, keeps
where the current context changes until the events of those operations have been tagged, and counts what the
summaries and plots need of the spans themselves (calls per context, the top-level phases, where allocator calls
end). `cosim.program.execute` drains the backend into the sink every BATCH_EVENTS operations (a
`firmware.cpu.CheckpointCpu` tells it when).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cosim.analysis.context import ALLOCATOR_KINDS, INIT_HEAP, Context, kind_of
from hdl.protocol import AccessEvent

BATCH_EVENTS = 1 << 16  # events per batch, and rows per row group of a Parquet trace

# One event per row, AccessEvent's fields in its order. Batches may use other integer widths for the same fields
# (the verilator backend's EVENT_DTYPE mirrors its C struct): readers go by field name.
EVENT_DTYPE = np.dtype([
    ("seq", np.int64), ("cycle", np.int64), ("op", np.uint8), ("vaddr", np.uint64), ("paddr", np.uint64),
    ("size", np.uint8), ("data", np.uint64), ("tlb_hit", np.bool_), ("tlb_miss", np.bool_),
    ("evicted_vpn", np.int64), ("walk_levels", np.uint8), ("walk_cycles", np.uint32), ("pwc_hits", np.uint8),
    ("ad_writes", np.uint8), ("fault", np.uint8), ("errcode", np.uint32),
])  # fmt: skip
assert EVENT_DTYPE.names == AccessEvent._fields

Columns = Mapping[str, np.ndarray] | np.ndarray  # AccessEvent field name -> one value per event


def event_columns(events: Sequence[AccessEvent]) -> np.ndarray:
    """`events` as a structured array of EVENT_DTYPE (for the backends that record AccessEvent tuples)."""
    return np.fromiter(events, dtype=EVENT_DTYPE, count=len(events))


def event_rows(columns: Columns) -> list[AccessEvent]:
    """The AccessEvents of a batch's columns (for tests and small traces: this is what streaming avoids)."""
    lists = [np.asarray(columns[name]).tolist() for name in AccessEvent._fields]
    return [AccessEvent._make(row) for row in zip(*lists, strict=True)]


class ContextTable:
    """Every distinct firmware context of a run, by id: the Context (label, path, kind, phase, kinds), its depth
    and its parent. A context is its path: the same label opened under the same parent is the same context."""

    def __init__(self) -> None:
        self.contexts: list[Context] = []
        self.depths: list[int] = []
        self.parents: list[int] = []  # -1 for a top-level context
        self._ids: dict[tuple[int, str], int] = {}

    def __len__(self) -> int:
        return len(self.contexts)

    def intern(self, parent: int, label: str) -> int:
        """The id of context `label` inside context `parent` (-1: at top level), made on first use."""
        key = (parent, label)
        found = self._ids.get(key)
        if found is not None:
            return found
        kind = kind_of(label)
        if parent < 0:
            context = Context(label, label, kind, label, frozenset((kind,)))
        else:
            up = self.contexts[parent]
            context = Context(label, f"{up.path}/{label}", kind, up.phase, up.kinds | {kind})
        self._ids[key] = len(self.contexts)
        self.contexts.append(context)
        self.depths.append(0 if parent < 0 else self.depths[parent] + 1)
        self.parents.append(parent)
        return self._ids[key]

    def __getstate__(self) -> dict[str, Any]:
        return {"contexts": self.contexts, "depths": self.depths, "parents": self.parents}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._ids = {(p, c.label): i for i, (p, c) in enumerate(zip(self.parents, self.contexts, strict=True))}


@dataclass
class EventBatch:
    """The events of consecutive operations, oldest first, with the context of each."""

    columns: Columns  # by AccessEvent field name
    context: np.ndarray  # int32 per event: its innermost context's id in `table`, -1 outside every context
    table: ContextTable  # every context of the run so far (it holds all that `context` names)

    def __len__(self) -> int:
        return len(self.context)


class EventSink(Protocol):
    """Receives a streamed run's events, a batch at a time, in seq order."""

    def write(self, batch: EventBatch) -> None: ...


@dataclass
class SpanCounts:
    """What a streamed run keeps of its context spans, in memory that grows with distinct contexts, not with time."""

    table: ContextTable
    calls: list[int]  # per context id: how many times it was opened
    phases: list[tuple[int, int, str]]  # (start seq, end seq, label) of top-level spans, consecutive ones of one
    #                                     label merged (the bands of the hit-rate plot)
    allocator_ends: array = field(repr=False)  # distinct end seqs of allocator calls (ALLOCATOR_KINDS), ascending
    heap_ready: int | None = None  # where the first `init_heap` ended: the heap exists from there on

    def phase_calls(self) -> dict[str, int]:
        """Top-level spans per label, in the order the labels first appeared."""
        calls: dict[str, int] = {}
        for index, context in enumerate(self.table.contexts):
            if self.table.depths[index] == 0:
                calls[context.label] = calls.get(context.label, 0) + self.calls[index]
        return calls

    def kind_calls(self) -> dict[str, int]:
        """Spans per kind of firmware operation."""
        calls: dict[str, int] = {}
        for index, context in enumerate(self.table.contexts):
            calls[context.kind] = calls.get(context.kind, 0) + self.calls[index]
        return calls


ProgressCallback = Callable[[str, int, int], None]  # (label, depth, seq) of each context as it opens


class ContextTracker:
    """The ContextListener of a streamed run: interns contexts, and tags events with them batch by batch."""

    def __init__(self, on_enter: ProgressCallback | None = None) -> None:
        self.table = ContextTable()
        self.calls: list[int] = []
        self.phases: list[tuple[int, int, str]] = []
        self.allocator_ends = array("q")
        self.heap_ready: int | None = None
        self._allocator: list[bool] = []  # per context id: an allocator call?
        self._stack: list[int] = [-1]  # open contexts, innermost last
        self._starts: list[int] = []  # seq where each open context started
        # Where the current context changes: from seq _change_seqs[i] on it is _change_ids[i]. Kept only until
        # the events before the last change have been tagged.
        self._change_seqs = array("q", [0])
        self._change_ids = array("q", [-1])
        self._on_enter = on_enter

    def enter(self, label: str, seq: int) -> None:
        context = self.table.intern(self._stack[-1], label)
        if context == len(self.calls):
            self.calls.append(0)
            self._allocator.append(kind_of(label) in ALLOCATOR_KINDS)
        self.calls[context] += 1
        self._stack.append(context)
        self._starts.append(seq)
        self._change_seqs.append(seq)
        self._change_ids.append(context)
        if self._on_enter is not None:
            self._on_enter(label, len(self._stack) - 2, seq)

    def exit(self, seq: int) -> None:
        context = self._stack.pop()
        start = self._starts.pop()
        self._change_seqs.append(seq)
        self._change_ids.append(self._stack[-1])
        if self._allocator[context] and (not self.allocator_ends or self.allocator_ends[-1] != seq):
            self.allocator_ends.append(seq)
        elif self.heap_ready is None and self.table.contexts[context].label == INIT_HEAP:
            self.heap_ready = seq
        if len(self._stack) == 1:
            label = self.table.contexts[context].label
            if self.phases and self.phases[-1][2] == label:
                self.phases[-1] = (self.phases[-1][0], seq, label)
            else:
                self.phases.append((start, seq, label))

    def tag(self, seqs: np.ndarray) -> np.ndarray:
        """The context id of the operations `seqs` (ascending, all issued), as int32; forgets the changes before
        them, so the next call must be for later operations."""
        if not len(seqs):
            return np.empty(0, dtype=np.int32)
        change_seqs = np.frombuffer(self._change_seqs, dtype=np.int64)
        change_ids = np.frombuffer(self._change_ids, dtype=np.int64)
        # the last change at or before each seq: a context entered and left between two operations owns none
        position = np.searchsorted(change_seqs, seqs.astype(np.int64, copy=False), side="right") - 1
        tags = change_ids[position].astype(np.int32)
        keep = int(position[-1])
        del change_seqs, change_ids  # release the buffer views before the arrays change size
        if keep:
            del self._change_seqs[:keep]
            del self._change_ids[:keep]
        return tags

    def counts(self) -> SpanCounts:
        """What the run's spans left for its summary and plots (contexts still open are counted as opened)."""
        return SpanCounts(self.table, self.calls, self.phases, self.allocator_ends, self.heap_ready)


class BatchPump:
    """Moves a backend's recorded events into a sink, tagged with their contexts: `flush()` at each checkpoint."""

    def __init__(self, drain: Callable[[], Columns], tracker: ContextTracker, sink: EventSink) -> None:
        self._drain = drain
        self._tracker = tracker
        self._sink = sink

    def flush(self) -> None:
        columns = self._drain()
        if len(columns["seq"]):
            self._sink.write(EventBatch(columns, self._tracker.tag(np.asarray(columns["seq"])), self._tracker.table))


class EventList:
    """A sink that keeps every event (for tests and small runs: what streaming exists to avoid)."""

    def __init__(self) -> None:
        self.events: list[AccessEvent] = []
        self.contexts: list[Context | None] = []

    def write(self, batch: EventBatch) -> None:
        self.events += event_rows(batch.columns)
        table = batch.table.contexts
        self.contexts += [table[i] if i >= 0 else None for i in batch.context.tolist()]


class ArrowSpool:
    """A sink that writes batches to an Arrow IPC stream file as they come (the cocotb backends' simulator process
    writes its events so, instead of pickling them back); `replay_spool` reads them back one batch at a time."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa

        self.path = path
        self._schema = pa.schema([*((name, pa.from_numpy_dtype(EVENT_DTYPE[name])) for name in EVENT_DTYPE.names),
                                  ("context", pa.int32())])
        self._file = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._file, self._schema, options=pa.ipc.IpcWriteOptions(compression="lz4"))

    def write(self, batch: EventBatch) -> None:
        import pyarrow as pa

        arrays = [arrow_array(np.asarray(batch.columns[name]), field.type)
                  for name, field in zip(EVENT_DTYPE.names, self._schema, strict=False)]
        context = arrow_array(batch.context, pa.int32())
        self._writer.write_batch(pa.record_batch([*arrays, context], schema=self._schema))

    def close(self) -> None:
        self._writer.close()
        self._file.close()


def replay_spool(path: Path, table: ContextTable) -> Iterator[EventBatch]:
    """The batches an ArrowSpool wrote, with the run's context table (complete once the run is over)."""
    import pyarrow as pa

    with pa.OSFile(str(path), "rb") as source:
        reader = pa.ipc.open_stream(source)
        for record in reader:
            columns = {name: numpy_of(record.column(name)) for name in EVENT_DTYPE.names}
            yield EventBatch(columns, numpy_of(record.column("context")), table)


def batches_of(events: Sequence[AccessEvent], contexts: Sequence[Context | None]) -> Iterator[EventBatch]:
    """Events held in lists, with their contexts (from `attribute`), as the batches of a streamed run."""
    table = ContextTable()
    ids: dict[int, int] = {}  # id(context) -> its index in the table
    for context in contexts:
        if context is not None and id(context) not in ids:
            ids[id(context)] = len(table.contexts)
            table.contexts.append(context)
    for start in range(0, len(events), BATCH_EVENTS):
        part = contexts[start:start + BATCH_EVENTS]
        tags = np.fromiter((-1 if c is None else ids[id(c)] for c in part), dtype=np.int32, count=len(part))
        yield EventBatch(event_columns(events[start:start + BATCH_EVENTS]), tags, table)


# -- Arrow, from and to numpy without pandas ---------------------------------------------------------------


def arrow_array(values: np.ndarray, type_: Any, *, null: np.ndarray | None = None) -> Any:
    """An Arrow array of a numpy array's values (`null`: where they are missing), built from its buffers.

    (pyarrow.array() on a numpy array imports pandas, when installed, the first time: over half a second.)
    """
    import pyarrow as pa

    validity = None if null is None else pa.py_buffer(np.packbits(~null, bitorder="little"))
    if type_ == pa.bool_():
        data = pa.py_buffer(np.packbits(values.astype(np.bool_, copy=False), bitorder="little"))
    else:
        data = pa.py_buffer(np.ascontiguousarray(values, dtype=type_.to_pandas_dtype()))
    return pa.Array.from_buffers(type_, len(values), [validity, data], null_count=-1 if null is not None else 0)


def arrow_strings(texts: Sequence[str]) -> Any:
    """An Arrow string array of `texts`, built from its buffers (see arrow_array)."""
    import pyarrow as pa

    encoded = [text.encode() for text in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    data = pa.py_buffer(b"".join(encoded))
    return pa.Array.from_buffers(pa.string(), len(encoded), [None, pa.py_buffer(offsets), data], null_count=0)


def numpy_of(column: Any) -> np.ndarray:
    """A numpy array of an Arrow column of numbers or bools without nulls, read from its buffers (see
    arrow_array: to_numpy() imports pandas)."""
    import pyarrow as pa

    parts = []
    for chunk in getattr(column, "chunks", [column]):
        data, start, count = chunk.buffers()[1], chunk.offset, len(chunk)
        if chunk.type == pa.bool_():
            bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
            parts.append(bits[start:start + count].astype(np.bool_))
        else:
            parts.append(np.frombuffer(data, dtype=chunk.type.to_pandas_dtype())[start:start + count])
    if not parts:
        return np.empty(0, dtype=column.type.to_pandas_dtype())
    return np.concatenate(parts) if len(parts) > 1 else parts[0]
