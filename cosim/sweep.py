"""`mmucosim sweep`: a grid of MMU configurations × workloads × backends, run on a Dask cluster, one row per point.

    mmucosim sweep demo many_boxes --n 2000 --tlb-entries 4,8,16,32,64 --tlb-ways 0,4 --pwc-entries 0,8 \\
        --backend reference,verilator --out build/sweep/tlb

The grid's dimensions are the options of the CLI's "MMU configuration" and "workload knobs" groups
(`cosim.options.config_options`, `workload_options` and `allocator_option`: DIMENSION_GROUPS),
read from those parsers: an option added there is a sweep dimension, parsed and validated by the CLI's own code
(`cosim.options.config_from`), without a line here. Add the
workloads (positional: names or `replay:FILE`) and the backends (`--backend`). Each dimension takes a comma list;
integer ones also take ranges (`--seed 0-9`). A workload knob applies to the workloads that take it (`--n` to
many_boxes, not to demo), and a configuration the hardware cannot be built with is left out, said once.

Where a row's numbers come from. A point runs untraced, as `cosim.program.measured`: the workload, timed on its own,
then one CSR read of each performance counter (`hdl.protocol.Counter`). The counters are exact — they are what
`cosim.analysis.summary.summarize` adds up from a traced run's events (hits, misses, walks, PTE reads, walk cycles,
A/D writes; `tests/test_sweep.py` checks they agree), and they also give what events do not sum (CYCLES, PWC_HITS,
evictions) — and an untraced run is the cheaper one: tracing costs up to half the speed and an event per
operation in memory. The `reference` model has no clock (its CYCLES counts operations, its WALK_CYCLES estimates
`mem_latency` per read), so its timing columns (`TIMING_COLUMNS`) are left empty rather than compared with the RTL's.

Results. Every finished point is written at once, atomically (a temporary file renamed), as `points/<key>.parquet`
in the output folder; `key` hashes the point's parameters and the code version (`code_version`). A rerun skips the
points whose file exists, so an interrupted sweep resumes where it stopped. At the end the grid's rows are compacted
into `sweep.parquet` and `sweep.csv`, the plots are drawn (`cosim.analysis.sweep_plots`) and the Pareto fronts
printed. A point that faults, panics or whose simulator fails is a row with its status and error; the sweep goes on.

The cluster. By default a `distributed.LocalCluster`, one single-threaded worker process per CPU, closed at the end;
`--scheduler tcp://HOST:PORT` submits to a running cluster instead (docs/sweeps.md). The builds a point needs (the
Verilated library, the cocotb simulators) are submitted first, one task per configuration, and the points wait for
theirs; `cosim.toolchain.build.cached` makes a build under a file lock in a content-keyed directory and writes its
marker last, so workers on one machine build a configuration once, never two at once, and never load a half-built
one (`tests/test_sweep.py` builds one artefact from two processes at once).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import inspect
import io
import itertools
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cosim import options

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
from cosim.backends import BACKENDS, HDL_BACKENDS
from cosim.workloads import REPLAY_PREFIX, WORKLOADS, Job, resolve
from firmware.heap_allocation_tests import failed_test
from hdl.protocol import Counter, MmuConfig, TlbPolicy

PROG = "mmucosim sweep"
DEFAULT_OUT = Path("build") / "sweep"
POINTS_DIR = "points"
NEEDS_BUILD = ("verilator", "cocotb-verilator", "cocotb-icarus")

COUNTER_COLUMNS = tuple(counter.name.lower() for counter in Counter)
DERIVED_COLUMNS = ("mem_ops", "hit_rate", "walk_cycles_per_mem_op", "cycles_per_mem_op", "wall_s", "cpu_s",
                   "point_s", "mem_ops_per_s")
TIMING_COLUMNS = ("cycles", "walk_cycles", "walk_cycles_per_mem_op", "cycles_per_mem_op")  # none on `reference`
RESULT_COLUMNS = (*COUNTER_COLUMNS, *DERIVED_COLUMNS, "status", "error", "worker")
# Columns that depend on the machine and the moment, not on the point: left out when runs are compared.
MEASURED_COLUMNS = ("wall_s", "cpu_s", "point_s", "mem_ops_per_s", "worker")

# status of a row: "ok"; "fault" (a CpuFault ended the kernel); "panic" (the firmware raised: an assertion, a
# panic); "error" (the simulator or a tool failed, or the worker died: `--retry-errors` runs those again)
STATUSES = ("ok", "fault", "panic", "error")


class SweepError(options.UsageError):
    """A grid that cannot be run: a bad value, an empty grid, an unreadable grid file."""


# -- dimensions ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dimension:
    """One axis of the grid: a CLI option that takes a comma list here."""

    name: str  # argparse dest, TOML key and column
    flag: str  # "--tlb-entries"
    kind: str  # "config": an MmuConfig option; "knob": a workload knob; "backend"
    parse: Callable[[str], Any]  # one value from its text, validated as the CLI does
    help: str
    ranges: bool  # integers: "A-B" stands for A, A+1, ..., B


def _value_parser(action: argparse.Action) -> Callable[[str], Any]:
    convert = action.type or (lambda text: text)

    def parse(text: str) -> Any:
        value = convert(text)
        if action.choices is not None and value not in action.choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(map(str, action.choices))}")
        return value

    return parse


def _backend(text: str) -> str:
    if text not in BACKENDS:
        raise argparse.ArgumentTypeError(f"unknown backend {text!r}; choose from {', '.join(BACKENDS)}")
    return text


# The command line's option groups whose every option is a dimension: (kind, the function making the parser).
DIMENSION_GROUPS = (
    ("config", options.config_options),
    ("knob", options.workload_options),
    ("knob", options.allocator_option),
)


@cache
def dimensions() -> tuple[Dimension, ...]:
    """The options of the CLI's DIMENSION_GROUPS, then the backend."""
    dims = []
    for kind, make in DIMENSION_GROUPS:
        for action in make()._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            dims.append(Dimension(action.dest, action.option_strings[0], kind, _value_parser(action),
                                  action.help or "", ranges=action.type is int))
    dims.append(Dimension("backend", "--backend", "backend", _backend, "what simulates the MMU (default reference)",
                          ranges=False))
    return tuple(dims)


def dimension(name: str) -> Dimension:
    """The dimension called `name` ("tlb_entries" or "tlb-entries")."""
    wanted = name.replace("-", "_")
    for dim in dimensions():
        if dim.name == wanted:
            return dim
    raise SweepError(f"no dimension {name!r}; the grid has {', '.join(d.name for d in dimensions())} and workloads")


def parse_values(dim: Dimension, text: str) -> tuple[Any, ...]:
    """The values of a comma list for `dim`: "4,8,16"; "0-9" for integers; duplicates dropped, order kept."""
    values: list[Any] = []
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        span = re.fullmatch(r"(-?\d+)\s*-\s*(-?\d+)", item) if dim.ranges else None
        try:
            if span:
                low, high = int(span[1]), int(span[2])
                if high < low:
                    raise argparse.ArgumentTypeError(f"empty range {item!r}")
                values.extend(dim.parse(str(v)) for v in range(low, high + 1))
            else:
                values.append(dim.parse(item))
        except (argparse.ArgumentTypeError, ValueError) as err:
            raise SweepError(f"{dim.flag}: {err}") from None
    if not values:
        raise SweepError(f"{dim.flag}: give at least one value")
    return tuple(dict.fromkeys(values))


# -- the grid --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """What to sweep: workload names, and the values of each dimension given (others take their defaults)."""

    workloads: tuple[str, ...]
    values: dict[str, tuple[Any, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Point:
    """One run: a workload with its knobs, on a backend, built for a configuration, at a code version."""

    workload: str
    knobs: dict[str, Any]  # the knobs the workload takes, as given (None: its default)
    backend: str
    config: MmuConfig
    job: Job
    version: str

    def params(self) -> dict[str, Any]:
        """The point's parameter columns."""
        knob_names = [d.name for d in dimensions() if d.kind == "knob"]
        return {"workload": self.workload, **{k: self.knobs.get(k) for k in knob_names}, "backend": self.backend,
                **config_columns(self.config), "version": self.version, "key": self.key}

    @property
    def key(self) -> str:
        """A hash of everything the point's result derives from (a replay's script included)."""
        what = {"workload": self.workload, "knobs": self.knobs, "backend": self.backend,
                "config": config_columns(self.config), "program": self.job.program,
                "args": hashlib.sha256(json.dumps(self.job.args, sort_keys=True, default=str).encode()).hexdigest(),
                "version": self.version}
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def build(self) -> tuple[str, str] | None:
        """(backend, configuration key) of the build it needs, or None."""
        if self.backend not in NEEDS_BUILD:
            return None
        return self.backend, json.dumps(config_columns(self.config), sort_keys=True)


def config_columns(config: MmuConfig) -> dict[str, Any]:
    """Every MmuConfig field, the policy by name."""
    return {**asdict(config), "tlb_policy": TlbPolicy(config.tlb_policy).name.lower()}


# Knobs some workload takes and others do not: applied to the workloads that take them, dropped for the rest.
_PER_WORKLOAD_KNOBS = frozenset().union(*(w.knobs for w in WORKLOADS.values()))


def expand(grid: Grid, version: str | None = None) -> tuple[list[Point], list[str]]:
    """The points of `grid` (workload, then knobs, then configuration, then backend, in the order given), and
    one line per configuration left out because the hardware cannot be built with it."""
    version = version or code_version()
    dims = dimensions()
    config_dims = [d for d in dims if d.kind == "config"]
    knob_dims = [d for d in dims if d.kind == "knob"]
    configs: list[MmuConfig] = []
    dropped: list[str] = []
    for combo in itertools.product(*(grid.values.get(d.name, (None,)) for d in config_dims)):
        namespace = argparse.Namespace(**{d.name: v for d, v in zip(config_dims, combo, strict=True)})
        try:
            configs.append(options.config_from(namespace))
        except options.UsageError as err:
            given = ", ".join(f"{d.flag} {v}" for d, v in zip(config_dims, combo, strict=True) if v is not None)
            dropped.append(f"{given}: {err}")
    configs = list(dict.fromkeys(configs))
    backends = grid.values.get("backend", ("reference",))
    points: dict[str, Point] = {}
    for name in grid.workloads:
        known = WORKLOADS.get(name)
        for combo in itertools.product(*(grid.values.get(d.name, (None,)) for d in knob_dims)):
            knobs = {d.name: v for d, v in zip(knob_dims, combo, strict=True) if v is not None}
            if known is None:  # replay:FILE takes no knob
                knobs = {k: v for k, v in knobs.items() if k not in _PER_WORKLOAD_KNOBS}
            else:
                knobs = {k: v for k, v in knobs.items() if k not in _PER_WORKLOAD_KNOBS or k in known.knobs}
            job = resolve(name, **knobs)
            for config in configs:
                for backend in backends:
                    point = Point(name, knobs, backend, config, job, version)
                    points.setdefault(point.key, point)
    return list(points.values()), dropped


# -- the code version ------------------------------------------------------------------------------------------

_PROJECT = Path(__file__).resolve().parents[1]
# What a point's result derives from: the hardware, the firmware, the backends and their builds, the runner.
VERSION_SOURCES = ("hdl", "firmware", "cosim/backends", "cosim/toolchain", "cosim/program.py", "cosim/runner.py",
                   "cosim/workloads.py")
VERSION_PACKAGES = ("myhdl", "cocotb", "verilator")


@cache
def code_version() -> str:
    """"src-" and 12 hex digits: a hash of VERSION_SOURCES (every .py, .cpp, .vlt and .v file), of the two functions
    that run a point here (`cosim.program.measured`, `run_point`) and of the simulators' versions. Two machines with
    the same version give the same rows; a worker of another version refuses the points (their rows say so)."""
    from cosim import program

    files: list[Path] = []
    for source in VERSION_SOURCES:
        path = _PROJECT / source
        files += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in (".py", ".cpp",
                                                                                                  ".vlt", ".v"))
    hasher = hashlib.sha256()
    for package in VERSION_PACKAGES:
        hasher.update(f"{package}={importlib.metadata.version(package)}\0".encode())
    for path in files:
        hasher.update(f"{path.relative_to(_PROJECT)}\0".encode() + path.read_bytes() + b"\0")
    for function in (program.measured, run_point, _fill_counters):
        hasher.update(inspect.getsource(function).encode())
    return "src-" + hasher.hexdigest()[:12]


def git_describe() -> str | None:
    """`git describe --always --dirty` of the project, for the record (None outside a git checkout)."""
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=_PROJECT, capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


# -- running one point (on a worker) ---------------------------------------------------------------------------


def prepare_build(backend: str, config: MmuConfig) -> str | None:
    """Build (or find) what `backend` needs for `config` on this worker's machine: None, or why it failed."""
    from cosim.backends import build_for

    try:
        build_for(backend, config)
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return None


def run_point(point: Point, build_failure: str | None = None) -> dict[str, Any]:
    """Run `point` untraced and return its row. Never raises: a fault, a panic or a failed simulator is the row's
    status and error."""
    start = time.perf_counter()
    row: dict[str, Any] = {**point.params(), **dict.fromkeys(RESULT_COLUMNS)}
    row["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    try:
        if point.version != code_version():
            raise RuntimeError(f"this worker runs code version {code_version()}, the sweep {point.version}: "
                               "install the same code on every worker")
        if build_failure is not None:
            raise RuntimeError(f"the {point.backend} build failed: {build_failure}")
        from cosim.program import MEASURED_PROGRAM
        from cosim.runner import run_program

        with contextlib.redirect_stdout(io.StringIO()):  # the kernel's println!
            result = run_program(MEASURED_PROGRAM, point.backend, point.config,
                                 args={"program": point.job.program, "args": dict(point.job.args)})
        if result.fault is not None:
            row |= {"status": "fault", "error": f"{type(result.fault).__name__}: {result.fault}"}
        else:
            _fill_counters(row, result.value, point.backend)
            panic = failed_test(result.value["value"])  # a test kernel that caught its own panic and reported it
            if panic is not None:
                row |= {"status": "panic", "error": panic}
    except Exception as err:
        status = "panic" if options.is_kernel_failure(err) else "error"
        row |= {"status": status, "error": f"{type(err).__name__}: {err}"[:4000]}
    row["point_s"] = time.perf_counter() - start
    return row


def _fill_counters(row: dict[str, Any], measured: dict[str, Any], backend: str) -> None:
    counters = measured["counters"]
    row.update(counters)
    mem_ops = counters["loads"] + counters["stores"]
    lookups = counters["tlb_hits"] + counters["tlb_misses"]
    row |= {
        "status": "ok",
        "mem_ops": mem_ops,
        "hit_rate": counters["tlb_hits"] / lookups if lookups else None,
        "walk_cycles_per_mem_op": counters["walk_cycles"] / mem_ops if mem_ops else None,
        "cycles_per_mem_op": counters["cycles"] / mem_ops if mem_ops else None,
        "wall_s": measured["wall_s"],
        "cpu_s": measured["cpu_s"],
        "mem_ops_per_s": mem_ops / measured["wall_s"] if measured["wall_s"] > 0 else None,
    }
    if backend not in HDL_BACKENDS:  # the reference model has no clock
        row |= dict.fromkeys(TIMING_COLUMNS)


# -- the results folder ----------------------------------------------------------------------------------------


class PointStore:
    """`<out>/points/<key>.parquet`, one file per finished point, each written under a temporary name, synced and
    renamed: a file that exists is complete, whatever stopped the sweep."""

    def __init__(self, out: Path) -> None:
        self.dir = out / POINTS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.parquet"

    def keys(self) -> set[str]:
        return {path.stem for path in self.dir.glob("*.parquet")}

    def status(self, key: str) -> str | None:
        import pyarrow.parquet as pq

        try:
            return pq.read_table(self.path(key), columns=["status"]).column("status")[0].as_py()
        except OSError:
            return None

    def write(self, row: dict[str, Any]) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        final = self.path(row["key"])
        temporary = self.dir / f".{row['key']}.{os.getpid()}.tmp"
        pq.write_table(pa.Table.from_pylist([row]), temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, final)
        _fsync_dir(self.dir)
        return final

    def read(self, keys: Sequence[str]) -> Any:
        """The rows of `keys` that exist, in that order, as a pandas DataFrame with proper dtypes."""
        import pandas as pd
        import pyarrow.parquet as pq

        frames = [pq.read_table(self.path(key)).to_pandas() for key in keys if self.path(key).exists()]
        if not frames:
            return pd.DataFrame(columns=[*(d.name for d in dimensions()), "workload", *RESULT_COLUMNS])
        with warnings.catch_warnings():  # all-None columns of error rows: their dtype is decided below
            warnings.simplefilter("ignore", FutureWarning)
            table = pd.concat(frames, ignore_index=True)
        return normalize(table)


def normalize(table: Any) -> Any:
    """Integer columns as nullable Int64, ratios as float64, whatever mix of rows (errors included) they came from."""
    import pandas as pd

    floats = {"hit_rate", "walk_cycles_per_mem_op", "cycles_per_mem_op", "wall_s", "cpu_s", "point_s",
              "mem_ops_per_s"}
    integers = {*COUNTER_COLUMNS, "mem_ops", *(name for name, value in asdict(MmuConfig()).items()
                                                if isinstance(value, int) and not isinstance(value, TlbPolicy))}
    integers |= {d.name for d in dimensions() if d.kind == "knob" and d.ranges}
    for column in table.columns:
        if column in floats:
            table[column] = pd.to_numeric(table[column], errors="coerce").astype("float64")
        elif column in integers:
            table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    return table


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """`write(temporary)`, then rename it to `path`."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(temporary)
    os.replace(temporary, path)
    return path


def compact(store: PointStore, points: Sequence[Point], out: Path) -> Any:
    """The grid's rows, in grid order, written as `sweep.parquet` and `sweep.csv`; the DataFrame."""
    table = store.read([p.key for p in points])
    write_atomic(out / "sweep.parquet", lambda path: table.to_parquet(path, index=False))
    write_atomic(out / "sweep.csv", lambda path: table.to_csv(path, index=False))
    return table


# -- the Pareto front ------------------------------------------------------------------------------------------


def pareto_front(table: Any, x: str = "tlb_entries", y: str = "cycles_per_mem_op") -> Any:
    """The rows no other row beats: none has `x` <= and `y` <= with one of them smaller. Sorted by `x`; of rows
    equal in both, the first is kept. Rows without `y` take no part."""
    ranked = table.dropna(subset=[y]).sort_values([x, y], kind="stable")
    keep, best = [], float("inf")
    for index, value in zip(ranked.index, ranked[y], strict=True):
        if value < best:
            keep.append(index)
            best = value
    return ranked.loc[keep]


def panel_of(row: Any) -> str:
    """A row's panel: the workload with its knobs, but not its seed (seeds are averaged): "many_boxes n=2000"."""
    import pandas as pd

    knobs = [d.name for d in dimensions() if d.kind == "knob" and d.name != "seed"]
    return " ".join([str(row["workload"]), *(f"{k}={row[k]}" for k in knobs if k in row and not pd.isna(row[k]))])


def averaged(table: Any) -> Any:
    """The finished rows averaged over seeds: one row per panel, backend and configuration, with `seeds` counting
    the rows behind it."""
    import pandas as pd

    ok = normalize(table[table["status"] == "ok"].copy())
    if ok.empty:
        return ok.assign(panel=pd.Series(dtype=str), seeds=pd.Series(dtype=int))
    ok["panel"] = ok.apply(panel_of, axis=1)
    keys = ["panel", "backend", *config_columns(MmuConfig())]
    metrics = ["hit_rate", "walk_cycles_per_mem_op", "cycles_per_mem_op", "tlb_misses", "walks", "walk_cycles",
               "pte_reads", "pwc_hits", "mem_ops", "wall_s"]
    grouped = ok.groupby(keys, sort=False, dropna=False)
    mean = grouped[metrics].mean(numeric_only=False).reset_index()
    return mean.assign(seeds=grouped.size().to_numpy())


def front_metric(table: Any) -> str:
    """cycles per memory operation when some row has them (an RTL backend ran), else the TLB miss rate."""
    has_cycles = "cycles_per_mem_op" in table and table["cycles_per_mem_op"].notna().any()
    return "cycles_per_mem_op" if has_cycles else "miss_rate"


def pareto_report(table: Any) -> str:
    """The Pareto front of TLB entries against cycles per memory operation, per workload and backend."""
    from cosim.analysis.summary import format_table, percent

    mean = averaged(table)
    if mean.empty:
        return "No point finished: no Pareto front."
    mean["miss_rate"] = 1 - mean["hit_rate"]
    varying = [c for c in config_columns(MmuConfig()) if c != "tlb_entries" and mean[c].nunique() > 1]
    sections = []
    for (panel, backend), group in mean.groupby(["panel", "backend"], sort=False):
        metric = front_metric(group)
        front = pareto_front(group, "tlb_entries", metric)
        headers = ["TLB entries", *varying, metric.replace("_", " "), "hit rate", "PTE reads", "PWC hits"]
        rows = [[str(r.tlb_entries), *(_cell(r[c]) for c in varying), f"{r[metric]:.4f}",
                 percent(r.hit_rate), f"{r.pte_reads:,.0f}", f"{r.pwc_hits:,.0f}"]
                for _, r in front.iterrows()]
        seeds = f", mean of {int(group['seeds'].max())} seeds" if group["seeds"].max() > 1 else ""
        sections.append(f"{panel} on {backend}{seeds}: {len(front)} of {len(group)} configurations on the front\n"
                        + format_table(headers, rows))
    return "\n\n".join(sections)


def _cell(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


# -- the cluster -----------------------------------------------------------------------------------------------

_DASK_NOISE = (
    r".*Port \d+ is already in use.*",
    r".*Sending large graph.*",
    r".*Creating scratch directories is taking a surprisingly long time.*",
)


def quiet_dask() -> None:
    """Filter the warnings Dask gives about its own housekeeping; errors still show."""
    for message in _DASK_NOISE:
        warnings.filterwarnings("ignore", message=message)
    for name in ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def connect(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A Dask client: of the cluster at `scheduler`, or of a LocalCluster of `workers` single-threaded worker
    processes (default: one per CPU), closed on the way out."""
    quiet_dask()
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler, timeout="30s")
        try:
            client.wait_for_workers(1, timeout=60)
            yield client
        finally:
            client.close()
        return
    with _sigint_ignored():  # the worker processes inherit it: Ctrl-C stops the sweep, which closes the cluster
        cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while inside (in the main thread only), so that processes started meanwhile ignore it."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def worker_count(client: Any) -> int:
    return len(client.scheduler_info().get("workers", {}))


# -- the sweep -------------------------------------------------------------------------------------------------


@dataclass
class SweepRun:
    """What `run_sweep` did."""

    table: Any  # the grid's rows (pandas)
    ran: int  # points run now
    skipped: int  # points found finished in the folder
    dropped: list[str]  # configurations left out
    elapsed_s: float  # from the first submission to the last row
    workers: int
    out: Path


def run_sweep(grid: Grid, out: Path, *, scheduler: str | None = None, workers: int | None = None,
              retry_errors: bool = False, progress: bool | None = None, log: Callable[[str], None] = print,
              client: Any = None) -> SweepRun:
    """Run the points of `grid` not yet in `out` on the cluster; write each as it finishes; compact the grid's rows.

    The cluster: `client`'s when given, else `connect(scheduler, workers)`'s, started only when a point is left to
    run. `progress`: a tqdm bar on stderr (None: when stderr is a terminal)."""
    from tqdm import tqdm

    points, dropped = expand(grid)
    if not points:
        raise SweepError("the grid is empty: every configuration was left out" if dropped else "the grid is empty")
    store = PointStore(out)
    done = store.keys()
    if retry_errors:
        done = {key for key in done if store.status(key) != "error"}
    todo = [p for p in points if p.key not in done]
    skipped = len(points) - len(todo)
    elapsed, count = 0.0, 0
    if todo:
        with contextlib.nullcontext(client) if client is not None else connect(scheduler, workers) as client:
            count = worker_count(client)
            log(f"{len(todo)} points to run on {count} worker{'s' * (count != 1)}"
                + (f" ({skipped} finished already)" if skipped else ""))
            start = time.perf_counter()
            written = 0
            with tqdm(total=len(points), initial=skipped, unit="point", desc="sweep", file=sys.stderr,
                      disable=None if progress is None else not progress, dynamic_ncols=True) as bar:
                try:
                    for row in _stream(client, todo):
                        store.write(row)
                        written += 1
                        bar.update()
                        if row["status"] != "ok":
                            bar.write(f"{row['status']}: {row['workload']} on {row['backend']} ({row['key']}): "
                                      f"{_first_line(row['error'])}", file=sys.stderr)
                        if bar.disable and progress is None:  # not a terminal (a log file): a line every tenth
                            _log_progress(written, len(todo), time.perf_counter() - start)
                except KeyboardInterrupt:
                    bar.write(f"interrupted: {skipped + written} of {len(points)} points are in {store.dir}/; "
                              "the same command resumes", file=sys.stderr)
                    raise
            elapsed = time.perf_counter() - start
    table = compact(store, points, out)
    return SweepRun(table, len(todo), skipped, dropped, elapsed, count, out)


def _log_progress(done: int, total: int, elapsed: float) -> None:
    step = max(1, total // 10)
    if done % step == 0 or done == total:
        eta = elapsed / done * (total - done)
        print(f"  {done}/{total} points, {elapsed:.0f} s, about {eta:.0f} s left", file=sys.stderr, flush=True)


def _stream(client: Any, points: Sequence[Point]) -> Iterator[dict[str, Any]]:
    """Submit the builds, then the points, and yield each point's row as it finishes."""
    from distributed import as_completed

    builds: dict[tuple[str, str], Any] = {}
    for point in points:
        need = point.build()
        if need is not None and need not in builds:
            tag = hashlib.sha256("\0".join(need).encode()).hexdigest()[:12]
            builds[need] = client.submit(prepare_build, point.backend, point.config, key=f"build-{need[0]}-{tag}",
                                         pure=False)
    by_future = {}
    for point in points:
        need = point.build()
        future = client.submit(run_point, point, builds[need] if need else None, key=f"point-{point.key}",
                               pure=False)
        by_future[future] = point
    try:
        for future in as_completed(by_future):
            point = by_future[future]
            try:
                yield future.result()
            except Exception as err:  # the worker died (KilledWorker), or the task could not be run at all
                row = {**point.params(), **dict.fromkeys(RESULT_COLUMNS)}
                yield row | {"status": "error", "error": f"{type(err).__name__}: {err}"[:4000]}
    finally:
        client.cancel([*by_future, *builds.values()])


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


# -- scaling, measured (`make bench`) ---------------------------------------------------------------------------

# A grid of equal, second-long points: many_boxes on `reference` at 8 configurations (4 in --quick).
BENCH_N = 60_000
BENCH_TARGET_SPEEDUP = 1.7  # 2 workers against 1
BENCH_TARGET_OVERHEAD = 0.10  # per point, of its simulation time, for points of a second or more


def bench_grid(quick: bool = False) -> Grid:
    entries = (4, 16) if quick else (4, 8, 16, 32)
    return Grid(("many_boxes",), {"n": (BENCH_N,), "tlb_entries": entries, "pwc_entries": (0, 8)})


def _warm() -> None:
    """Import what a point needs, so that a worker's first point is timed like the others."""
    import cosim.program
    import cosim.runner  # noqa: F401


def bench_scaling(quick: bool = False, line: Callable[[str], None] = print) -> dict[str, Any]:
    """The same grid on a local cluster of 1 worker, then of 2 (fresh folders, workers warmed up first):
    elapsed time from the first submission to the last row, the speedup, and the per-point overhead of the
    1-worker run — elapsed minus the simulations' own time (the workload, as `measured` times it), per point."""
    import tempfile

    grid = bench_grid(quick)
    load_before = os.getloadavg()
    runs: dict[int, dict[str, Any]] = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory(prefix="mmucosim-sweep-bench-") as tmp:
            start = time.perf_counter()
            with connect(None, workers) as client:
                client.wait_for_workers(workers, timeout=60)
                client.run(_warm)
                ready = time.perf_counter() - start
                result = run_sweep(grid, Path(tmp), client=client, progress=False, log=lambda _: None)
            table = result.table
            simulation = float(table["wall_s"].sum())
            cpu = float(table["cpu_s"].sum())
            in_point = float((table["point_s"] - table["wall_s"]).sum())
            runs[workers] = {
                "workers": workers, "points": len(table), "ok": int((table["status"] == "ok").sum()),
                "cluster_start_s": ready, "elapsed_s": result.elapsed_s, "simulation_s": simulation,
                "mean_point_wall_s": simulation / len(table), "min_point_wall_s": float(table["wall_s"].min()),
                "in_point_overhead_s": in_point / len(table),
                "overhead_per_point_s": (result.elapsed_s * workers - simulation) / len(table),
                "points_per_s": len(table) / result.elapsed_s,
                # the workers' busy share of the run: 1.0 when no worker ever waited for the cluster
                "efficiency": simulation / (workers * result.elapsed_s),
                # the CPU the simulations got while they ran: below 1.0 when other work shares the cores
                "cpu_share": cpu / simulation,
            }
            r = runs[workers]
            line(f"sweep on {workers} worker{'s' * (workers > 1)}: {r['points']} points of many_boxes n={BENCH_N:,} "
                 f"({r['mean_point_wall_s']:.2f} s each) in {r['elapsed_s']:.2f} s, {r['points_per_s']:.2f} "
                 f"points/s, workers busy {r['efficiency']:.0%}, each getting {r['cpu_share']:.0%} of a core "
                 f"(+{ready:.1f} s to start the cluster)")
    one, two = runs[1], runs[2]
    overhead = (one["elapsed_s"] - one["simulation_s"]) / one["simulation_s"]
    return {
        "grid": {"workload": "many_boxes", "n": BENCH_N, **{k: list(v) for k, v in grid.values.items()},
                 "backend": "reference"},
        "runs": [one, two],
        "speedup": one["elapsed_s"] / two["elapsed_s"],
        "target_speedup": BENCH_TARGET_SPEEDUP,
        "overhead": overhead,
        "target_overhead": BENCH_TARGET_OVERHEAD,
        # > 1 when two simulations at once run slower each than one alone: the machine's cores are shared
        "point_slowdown_with_2": two["mean_point_wall_s"] / one["mean_point_wall_s"],
        # what the cluster would give on two free cores: 2 x how busy it kept its workers, relative to 1 worker
        "projected_speedup_free_cores": 2 * two["efficiency"] / one["efficiency"],
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


# -- the command -----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    workloads = ", ".join([*WORKLOADS, f"{REPLAY_PREFIX}FILE"])
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every combination of the values given — workloads, workload knobs, MMU options, "
                    "backends — on a Dask cluster (a local one by default) and collect one row per point into "
                    "OUT/sweep.parquet and OUT/sweep.csv, with plots and the Pareto front of TLB entries against "
                    "cycles per memory operation. Every option takes a comma list; integer ones also a range "
                    "(--seed 0-9). Finished points are kept in OUT/points/: a rerun skips them.",
        epilog=f"workloads: {workloads}\nsee docs/sweeps.md",
    )
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD", help="workload names or replay:FILE")
    parser.add_argument("--grid", type=Path, metavar="FILE",
                        help="a TOML file of the grid: keys are the option names (tlb_entries = [4, 8]) and "
                             "workloads, out, scheduler, workers; options given here replace the file's")
    groups = {"config": parser.add_argument_group("MMU configuration (comma lists)"),
              "knob": parser.add_argument_group("workload knobs (comma lists; each applies to the workloads "
                                                "that take it)"),
              "backend": parser.add_argument_group("backends")}
    for dim in dimensions():
        groups[dim.kind].add_argument(dim.flag, dest=dim.name, metavar="LIST", help=dim.help.replace("%", "%%"))
    run = parser.add_argument_group("running")
    run.add_argument("--out", type=Path, metavar="DIR", help=f"the sweep folder (default {DEFAULT_OUT})")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: a local cluster)")
    run.add_argument("--workers", type=int, metavar="N",
                     help=f"worker processes of the local cluster (default: one per CPU, {os.cpu_count()} here)")
    run.add_argument("--retry-errors", action="store_true",
                     help="run again the points whose simulator or tool failed (status error)")
    run.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return parser


def grid_from(args: argparse.Namespace) -> tuple[Grid, dict[str, Any]]:
    """The grid of the command line over the grid file's, and the file's run settings (out, scheduler, workers)."""
    values: dict[str, tuple[Any, ...]] = {}
    workloads: list[str] = []
    settings: dict[str, Any] = {}
    if args.grid is not None:
        try:
            document = tomllib.loads(args.grid.read_text())
        except OSError as err:
            raise SweepError(f"cannot read the grid file {str(args.grid)!r}: {err.strerror}") from None
        except tomllib.TOMLDecodeError as err:
            raise SweepError(f"bad grid file {str(args.grid)!r}: {err}") from None
        for key, value in document.items():
            name = key.replace("-", "_")
            if name in ("workloads", "workload"):
                workloads = [value] if isinstance(value, str) else [str(v) for v in value]
            elif name in ("out", "scheduler", "workers"):
                settings[name] = value
            else:
                items = value if isinstance(value, list) else [value]
                values[dimension(name).name] = parse_values(dimension(name), ",".join(map(str, items)))
    for dim in dimensions():
        text = getattr(args, dim.name)
        if text is not None:
            values[dim.name] = parse_values(dim, text)
    workloads = list(args.workloads) or workloads
    if not workloads:
        raise SweepError("name at least one workload (e.g. mmucosim sweep demo many_boxes --tlb-entries 4,8,16)")
    return Grid(tuple(dict.fromkeys(workloads)), values), settings


def main(argv: Sequence[str] | None = None) -> int:
    """`mmucosim sweep ...`: 0 when every point finished ok, 1 when some faulted or failed, 2 for a bad grid."""
    args = build_parser().parse_args(argv)
    grid, settings = grid_from(args)
    out = args.out or Path(settings.get("out", DEFAULT_OUT))
    scheduler = args.scheduler or settings.get("scheduler")
    workers = args.workers or settings.get("workers")
    points, dropped = expand(grid)
    described = git_describe()
    print(f"{PROG}: {len(points)} points at code version "
          f"{code_version()}" + (f" (git {described})" if described else "") + f"; results in {out}/")
    for line in dropped[:5]:
        print(f"  left out: {line}")
    if len(dropped) > 5:
        print(f"  … and {len(dropped) - 5} more configurations the hardware cannot be built with")
    result = run_sweep(grid, out, scheduler=scheduler, workers=workers, retry_errors=args.retry_errors)
    table = result.table
    print(f"{result.ran} points run in {result.elapsed_s:.1f} s, {result.skipped} found finished")
    counts = table["status"].value_counts().to_dict() if not table.empty else {}
    print("status: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES if counts.get(s)))
    files = [out / "sweep.parquet", out / "sweep.csv"]
    if not args.no_plots:
        from cosim.analysis.sweep_plots import plot_sweep

        files += plot_sweep(averaged(table), list(config_columns(MmuConfig())), out)
    print("\nPareto front: TLB entries against cycles per memory operation (the TLB miss rate where no RTL "
          "backend ran), per workload")
    print(pareto_report(table))
    print(f"\nFiles in {out}/: " + ", ".join(p.name for p in files) + f", {POINTS_DIR}/ (one file per point)")
    return 0 if set(counts) <= {"ok"} else options.EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
