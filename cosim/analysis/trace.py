"""Per-operation TLB trace files: each `AccessEvent` with the nested firmware context that issued it
(`cosim.analysis.context`), e.g. "many_boxes/Box::new/alloc(8, 8)".

A trace file has the columns COLUMNS, one row per operation, and is written as the run goes (an EventSink of
`cosim.stream`): Apache Parquet by default (typed columns, zstd, a row group per batch), or CSV or JSON Lines, whose
addresses and data are hex strings, so that spreadsheets keep all 64 bits.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cosim.analysis.context import Context
from cosim.outputs import AtomicFile, guarded, partial_path, remove_quietly
from cosim.stream import EventBatch, arrow_array, arrow_strings, batches_of, numpy_of
from hdl.protocol import AccessEvent, Fault, Op

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


# -- writers: EventSinks that write a file as batches arrive ----------------------------------------------------

TRACE_FORMATS = {"parquet": "trace.parquet", "csv": "trace.csv", "jsonl": "trace.jsonl"}  # format -> file name


def _labels(batch: EventBatch) -> tuple[list[str], list[str]]:
    """The label and path of each event of `batch` ("" outside every context)."""
    contexts = batch.table.contexts
    names: dict[int, tuple[str, str]] = {-1: ("", "")}
    labels, paths = [], []
    for tag in batch.context.tolist():
        pair = names.get(tag)
        if pair is None:
            pair = names[tag] = (contexts[tag].label, contexts[tag].path)
        labels.append(pair[0])
        paths.append(pair[1])
    return labels, paths


def _rows(batch: EventBatch) -> Iterator[AccessEvent]:
    lists = [np.asarray(batch.columns[name]).tolist() for name in AccessEvent._fields]
    return map(AccessEvent._make, zip(*lists, strict=True))


class TraceWriter:
    """Writes a trace file batch by batch (an EventSink) under a temporary name; `close()` puts it in place,
    `discard()` removes it. Either may be called once; an I/O error is an OutputError naming the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events = 0
        self.last_cycle: int | None = None

    def write(self, batch: EventBatch) -> None:
        if not len(batch):
            return
        with guarded(self.path):
            self._write(batch)
        self.events += len(batch)
        self.last_cycle = int(batch.columns["cycle"][-1])

    def _write(self, batch: EventBatch) -> None:
        raise NotImplementedError

    def close(self) -> Path:
        raise NotImplementedError

    def discard(self) -> None:
        raise NotImplementedError


class _TextTraceWriter(TraceWriter):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._file = AtomicFile(path, "w", newline="")

    def close(self) -> Path:
        return self._file.commit()

    def discard(self) -> None:
        self._file.discard()


class JsonlTraceWriter(_TextTraceWriter):
    """One JSON object per line, keys in COLUMNS order; `evicted_vpn` is null when nothing was evicted."""

    def _write(self, batch: EventBatch) -> None:
        encoded: dict[str, str] = {}  # label or path -> as a JSON string

        def text(name: str) -> str:
            found = encoded.get(name)
            if found is None:
                found = encoded[name] = json.dumps(name)
            return found

        lines = []
        for event, label, path in zip(_rows(batch), *_labels(batch), strict=True):
            cells = list(_cells(event, "null"))
            cells[7], cells[8] = _JSON_BOOL[cells[7]], _JSON_BOOL[cells[8]]
            if event.evicted_vpn >= 0:
                cells[9] = f'"{cells[9]}"'
            lines.append(_JSON_LINE % (*cells, text(label), text(path)))
        self._file.file.write("".join(lines))


class CsvTraceWriter(_TextTraceWriter):
    """A header line with COLUMNS, then one line per event; `evicted_vpn` is empty when nothing was evicted."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._csv = csv.writer(self._file.file)
        with guarded(path):
            self._csv.writerow(COLUMNS)

    def _write(self, batch: EventBatch) -> None:
        rows = zip(_rows(batch), *_labels(batch), strict=True)
        self._csv.writerows((*_cells(event, ""), label, path) for event, label, path in rows)


class ParquetTraceWriter(TraceWriter):
    """Apache Parquet, one row group per batch (BATCH_EVENTS rows), zstd: numbers as numbers (addresses and data
    as uint64, `evicted_vpn` null when nothing was evicted), `op`, `fault`, `label` and `path` dictionary-encoded
    strings. `contexts=False` leaves out label and path (a scratch copy of the events)."""

    def __init__(self, path: Path, *, contexts: bool = True) -> None:
        super().__init__(path)
        import pyarrow.parquet as pq

        self._contexts = contexts
        self.schema = parquet_schema(contexts=contexts)
        self._partial = partial_path(path)
        with guarded(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(
                self._partial, self.schema, compression="zstd", use_dictionary=list(_PARQUET_DICTIONARY),
                column_encoding=dict.fromkeys(("seq", "cycle"), "DELTA_BINARY_PACKED"),  # half the file
                write_statistics=["seq", "cycle"],
            )  # fmt: skip

    def _write(self, batch: EventBatch) -> None:
        import pyarrow as pa

        arrays = arrow_event_arrays(batch.columns)
        if self._contexts:
            arrays += _arrow_context_arrays(batch)
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema), row_group_size=len(batch))

    def close(self) -> Path:
        with guarded(self.path):
            try:
                self._writer.close()
                with open(self._partial, "rb+") as written:
                    os.fsync(written.fileno())
                os.replace(self._partial, self.path)
            except BaseException:
                self.discard()
                raise
        return self.path

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        remove_quietly(self._partial)


def open_trace_writer(trace_format: str, out_dir: Path) -> TraceWriter:
    """The writer of `trace_format` (a key of TRACE_FORMATS) for `out_dir`/trace.<format>."""
    path = out_dir / TRACE_FORMATS[trace_format]
    writer = {"parquet": ParquetTraceWriter, "csv": CsvTraceWriter, "jsonl": JsonlTraceWriter}[trace_format]
    return writer(path)


_PARQUET_DICTIONARY = ("op", "fault", "label", "path")
_OP_DICTIONARY = [_OP_NAMES.get(value, f"OP{value}") for value in range(8)]  # req_op is 3 bits
_FAULT_DICTIONARY = [_FAULT_NAMES.get(value, f"FAULT{value}") for value in range(8)]
_INTEGER_TYPES = {
    "seq": "int64", "cycle": "int64", "vaddr": "uint64", "paddr": "uint64", "size": "uint8", "data": "uint64",
    "evicted_vpn": "int64", "walk_levels": "uint8", "walk_cycles": "uint32", "pwc_hits": "uint8",
    "pte_reads": "uint8", "ad_writes": "uint8", "errcode": "uint32",
}  # fmt: skip


def parquet_schema(*, contexts: bool = True) -> Any:
    """The Arrow schema of a Parquet trace: COLUMNS, typed (see ParquetTraceWriter)."""
    import pyarrow as pa

    def field(name: str) -> Any:
        if name in ("op", "fault"):
            return pa.field(name, pa.dictionary(pa.int8(), pa.string()), nullable=False)
        if name in ("label", "path"):
            return pa.field(name, pa.dictionary(pa.int32(), pa.string()), nullable=False)
        if name in _BOOL:
            return pa.field(name, pa.bool_(), nullable=False)
        return pa.field(name, pa.type_for_alias(_INTEGER_TYPES[name]), nullable=name == "evicted_vpn")

    return pa.schema([field(name) for name in COLUMNS if contexts or name not in ("label", "path")])


def arrow_event_arrays(columns: Mapping[str, np.ndarray] | np.ndarray) -> list[Any]:
    """The Arrow arrays of COLUMNS up to `errcode` (label and path aside) from a batch's columns."""
    import pyarrow as pa

    arrays = []
    for name in COLUMNS[:-2]:
        source = "walk_levels" if name == "pte_reads" else name  # every level a walk visits is one PTE read
        values = np.asarray(columns[source])
        if name in ("op", "fault"):
            dictionary = _OP_DICTIONARY if name == "op" else _FAULT_DICTIONARY
            indices = arrow_array(values, pa.int8())
            arrays.append(pa.DictionaryArray.from_arrays(indices, arrow_strings(dictionary)))
        elif name == "evicted_vpn":
            arrays.append(arrow_array(values, pa.int64(), null=values < 0))
        elif name in _BOOL:
            arrays.append(arrow_array(values, pa.bool_()))
        else:
            arrays.append(arrow_array(values, pa.type_for_alias(_INTEGER_TYPES[name])))
    return arrays


def _arrow_context_arrays(batch: EventBatch) -> list[Any]:
    """`label` and `path` of a batch, dictionary-encoded over the contexts it names."""
    import pyarrow as pa

    used, indices = np.unique(batch.context, return_inverse=True)
    contexts = batch.table.contexts
    chosen = [contexts[tag] if tag >= 0 else None for tag in used.tolist()]
    indices = arrow_array(indices.ravel(), pa.int32())
    return [
        pa.DictionaryArray.from_arrays(indices, arrow_strings([c.label if c else "" for c in chosen])),
        pa.DictionaryArray.from_arrays(indices, arrow_strings([c.path if c else "" for c in chosen])),
    ]


def read_parquet_batches(path: Path, columns: Sequence[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """A Parquet trace a row group at a time, as numpy columns (`evicted_vpn` with -1 for none; `op` and `fault`
    as their numbers; label and path as strings), never the whole file in memory."""
    import pyarrow.parquet as pq

    with guarded(path):
        source = pq.ParquetFile(path)
    for group in range(source.num_row_groups):
        with guarded(path):
            table = source.read_row_group(group, columns=list(columns) if columns else None)
        yield {name: _numpy_column(name, table.column(name)) for name in table.column_names}


def _numpy_column(name: str, column: Any) -> np.ndarray:
    chunks = column.chunks
    if name in ("op", "fault"):
        names = _OP_DICTIONARY if name == "op" else _FAULT_DICTIONARY
        parts = [
            np.array([names.index(n) for n in chunk.dictionary.to_pylist()], dtype=np.uint8)[numpy_of(chunk.indices)]
            for chunk in chunks
        ]  # fmt: skip
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint8)
    if name == "evicted_vpn":
        column = column.fill_null(-1)
    if name in ("label", "path"):
        return np.asarray(column.to_pylist(), dtype=object)
    return numpy_of(column)


def write_jsonl(path: Path, events: Sequence[AccessEvent], contexts: Sequence[Context | None]) -> Path:
    """`events` with their contexts as JSON Lines (see JsonlTraceWriter)."""
    return _write_all(JsonlTraceWriter(path), events, contexts)


def write_csv(path: Path, events: Sequence[AccessEvent], contexts: Sequence[Context | None]) -> Path:
    """`events` with their contexts as CSV (see CsvTraceWriter)."""
    return _write_all(CsvTraceWriter(path), events, contexts)


def write_parquet(path: Path, events: Sequence[AccessEvent], contexts: Sequence[Context | None]) -> Path:
    """`events` with their contexts as Parquet (see ParquetTraceWriter)."""
    return _write_all(ParquetTraceWriter(path), events, contexts)


def _write_all(writer: TraceWriter, events: Sequence[AccessEvent], contexts: Sequence[Context | None]) -> Path:
    try:
        for batch in batches_of(events, contexts):
            writer.write(batch)
    except BaseException:
        writer.discard()
        raise
    return writer.close()


def read_trace(path: Path) -> list[TraceRow]:
    """A trace written by the writers above, chosen by suffix: ".parquet", ".csv" or ".jsonl" (all in memory)."""
    if path.suffix == ".parquet":
        rows: list[TraceRow] = []
        for columns in read_parquet_batches(path):
            events = [AccessEvent._make(r) for r in zip(*(columns[n].tolist() for n in AccessEvent._fields),
                                                        strict=True)]
            rows += map(TraceRow, events, columns["label"].tolist(), columns["path"].tolist())
        return rows
    with path.open(newline="") as src:
        if path.suffix == ".csv":
            return [_parse(record) for record in csv.DictReader(src)]
        return [_parse(json.loads(line)) for line in src if line.strip()]


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
