"""`mmucosim bench`: the throughput of every backend on the same workloads, measured in one run.

Each run executes `measured` (below) as its program: the workload itself, then a read of every performance
counter, so that every backend, the cocotb ones in their own process included, reports the loads and stores the
firmware issued (LOADS + STORES) and, on RTL backends, the cycles the hardware spent. `measured` also times the
workload, wall and CPU: without importing it, building or starting the simulator (the rest of the run is kept
apart as `startup_s`). Builds happen before the first timed run and are timed on their own; a forced rebuild of
the Verilated model in a temporary directory shows what a changed design costs.

The slow simulators (SLOW_BACKENDS) run reduced sizes, said so in the table and in the JSON (`"reduced": true`
with the size in `"n"`); `reference` then also runs those sizes, so that every ratio compares equal work.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosim.backends import BACKENDS, HDL_BACKENDS, BackendError, build_for
from cosim.program import COUNTER_READS, MEASURED_PROGRAM
from cosim.runner import run_program
from cosim.workloads import Job, resolve
from firmware.allocator import ALLOCATORS, DEFAULT_ALLOCATOR, HEAP_SIZE
from hdl.protocol import AccessEvent, MmuConfig, Op

PROG = "mmucosim bench"
DEFAULT_OUT = Path("build") / "bench" / "results.json"

WORKLOADS = ("demo", "many_boxes", "random")
SLOW_BACKENDS = ("myhdl", "cocotb-verilator", "cocotb-icarus")  # too slow for 2.5M+ operations in a bench
RANDOM_SEED = 1

# Targets: the median firmware memory operations per second of each backend, tracing off, on 2 cores.
TARGET_OPS_PER_S = {
    "reference": 500_000,
    "verilator": 200_000,
    "cocotb-verilator": 15_000,
    "cocotb-icarus": 8_000,
    "myhdl": 3_000,
}
TRACE_TARGET_FACTOR = 0.5  # with tracing on, half the rate is enough
VERILATOR_MANY_BOXES_MAX_S = 15.0  # full many_boxes on verilator, build excluded
REBUILD_MAX_S = 60.0  # Verilating and compiling one configuration from scratch
# A run this short is one sample of a machine whose speed moves by tens of percent from one moment to the next:
# such workloads are repeated until their runs add up to SHORT_RUNS_TOTAL_S, at most SHORT_RUNS_MAX times.
SHORT_RUN_S = 0.1
SHORT_RUNS_TOTAL_S = 0.5
SHORT_RUNS_MAX = 25
PROBE_PREFERENCE = ("verilator", "cocotb-verilator", "cocotb-icarus", "myhdl")  # fastest RTL backend first

_LOAD, _STORE = int(Op.LOAD), int(Op.STORE)


@dataclass(frozen=True)
class Sizes:
    """The size knobs of the sized workloads at one scale."""

    many_boxes: int  # boxes
    random_ops: int  # operations of the generated allocation script


FULL = Sizes(many_boxes=HEAP_SIZE, random_ops=10_000)  # the sizes: the seed's 102,400 boxes
REDUCED = Sizes(many_boxes=2_000, random_ops=1_000)  # for SLOW_BACKENDS
QUICK = Sizes(many_boxes=10_000, random_ops=1_000)
QUICK_REDUCED = Sizes(many_boxes=300, random_ops=200)


class BenchError(Exception):
    """A run that could not be measured: the kernel stopped or faulted, or the backend failed."""




# -- what to run --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One backend on one workload at one size."""

    backend: str
    workload: str
    n: int | None  # many_boxes: boxes; random: script operations; demo: None (it has no size)
    reduced: bool  # a smaller size than the benchmark's, because the backend is slow
    allocator: str = DEFAULT_ALLOCATOR  # the kernel's global allocator (`firmware.allocator.ALLOCATORS`)

    def job(self) -> Job:
        if self.workload == "many_boxes":
            return resolve("many_boxes", n=self.n, allocator=self.allocator)
        if self.workload == "random":
            return resolve("random", seed=RANDOM_SEED, ops=self.n, allocator=self.allocator)
        return resolve(self.workload, allocator=self.allocator)

    @property
    def size(self) -> str:
        """"n=102,400", "ops=10,000 seed=1" or "-", with "(reduced)" when it is."""
        if self.n is None:
            return "-"
        text = f"n={self.n:,}" if self.workload == "many_boxes" else f"ops={self.n:,} seed={RANDOM_SEED}"
        return f"{text} (reduced)" if self.reduced else text


def _sized(backend: str, workload: str, sizes: Sizes, reduced: bool, allocator: str) -> RunSpec:
    n = {"many_boxes": sizes.many_boxes, "random": sizes.random_ops}.get(workload)
    return RunSpec(backend, workload, n, reduced and n is not None, allocator)


def plan(backends: Sequence[str], workloads: Sequence[str], *, quick: bool = False,
         allocator: str = DEFAULT_ALLOCATOR) -> list[RunSpec]:
    """The runs of a benchmark, backend by backend: slow backends at the reduced sizes, `reference` at the
    full sizes and, when a slow backend takes part, at the reduced ones too; every one on the global
    allocator `allocator`."""
    full, reduced = (QUICK, QUICK_REDUCED) if quick else (FULL, REDUCED)
    any_slow = any(backend in SLOW_BACKENDS for backend in backends)
    specs: list[RunSpec] = []
    for backend in backends:
        for workload in workloads:
            candidates = []
            if backend not in SLOW_BACKENDS:
                candidates.append(_sized(backend, workload, full, False, allocator))
            if backend in SLOW_BACKENDS or (backend == "reference" and any_slow):
                candidates.append(_sized(backend, workload, reduced, True, allocator))
            specs.extend(dict.fromkeys(candidates))  # demo has one size only
    return specs


# -- measuring ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latencies:
    """Cycles per LOAD or STORE, from the events of a traced run (response to response)."""

    cycles_per_hit: float | None  # a TLB hit that did not walk
    cycles_per_miss: float | None  # a TLB miss: lookup, walk, fill and the access
    source: str  # the traced run they come from


def latencies(events: Iterable[AccessEvent], source: str) -> Latencies:
    """Each operation's cycles are the distance from the previous response to its own (the runner presents a
    request in the cycle of the previous response), so the first operation, which follows the reset, is left
    out."""
    hit_n = hit_c = miss_n = miss_c = 0
    previous: int | None = None
    for event in events:
        if previous is not None and event.op in (_LOAD, _STORE):
            cycles = event.cycle - previous
            if event.tlb_miss:
                miss_n += 1
                miss_c += cycles
            elif event.tlb_hit and not event.walk_levels:
                hit_n += 1
                hit_c += cycles
        previous = event.cycle
    return Latencies(_ratio(hit_c, hit_n), _ratio(miss_c, miss_n), source)


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


@dataclass
class Measurement:
    """The repeats of one RunSpec, or why it could not be measured."""

    spec: RunSpec
    trace: bool
    wall_s: list[float] = field(default_factory=list)  # the workload, per repeat
    cpu_s: list[float] = field(default_factory=list)  # the CPU time meanwhile
    startup_s: list[float] = field(default_factory=list)  # starting the simulator and reading results back
    ops: int = 0  # protocol operations of the workload (without the counter reads)
    counters: dict[str, int] = field(default_factory=dict)
    latencies: Latencies | None = None  # traced RTL runs only
    error: str | None = None

    @property
    def wall(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def mem_ops(self) -> int:
        return self.counters["loads"] + self.counters["stores"]

    @property
    def ops_per_s(self) -> float:
        return self.mem_ops / self.wall

    @property
    def ops_per_cpu_s(self) -> float:
        """The rate the CPU time allows: what an idle machine would show, as other work shares this one."""
        return self.mem_ops / statistics.median(self.cpu_s)

    @property
    def target(self) -> float:
        return TARGET_OPS_PER_S[self.spec.backend] * (TRACE_TARGET_FACTOR if self.trace else 1)

    @property
    def status(self) -> str:
        if self.error is not None:
            return "ERROR"
        return "PASS" if self.ops_per_s >= self.target else "MISS"

    @property
    def rtl(self) -> bool:
        return self.spec.backend in HDL_BACKENDS


@dataclass(frozen=True)
class Run:
    """What one run of a RunSpec measured."""

    wall_s: float  # the workload
    cpu_s: float  # the CPU time of the process that ran it, meanwhile
    startup_s: float  # the rest of run_program: starting the simulator, collecting the result
    ops: int  # protocol operations of the workload (without the counter reads)
    counters: dict[str, int]
    latencies: Latencies | None  # traced RTL runs only


def run_once(spec: RunSpec, config: MmuConfig, *, trace: bool) -> Run:
    """One run of `spec`."""
    job = spec.job()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the kernel's println!
            result = run_program(MEASURED_PROGRAM, spec.backend, config, args={"program": job.program,
                                                                             "args": dict(job.args)}, trace=trace)
    except BackendError as err:
        raise BenchError(f"backend error: {err}") from err
    except Exception as err:  # a panic or failed assertion of the firmware, or a simulator's own error
        raise BenchError(f"{type(err).__name__}: {err}") from err
    total = time.perf_counter() - start
    if result.fault is not None:
        raise BenchError(f"the kernel faulted: {result.fault}")
    traced = f"{spec.backend} {spec.workload} {spec.size}"
    timing = latencies(result.events, traced) if trace and spec.backend in HDL_BACKENDS else None
    outcome = result.value
    return Run(outcome["wall_s"], outcome["cpu_s"], total - outcome["wall_s"], result.ops - COUNTER_READS,
               outcome["counters"], timing)


def measure(spec: RunSpec, config: MmuConfig, *, repeat: int, trace: bool, progress: _Progress) -> Measurement:
    """`repeat` runs of `spec`, each announced by a progress line; more, unannounced, when the runs are short
    (SHORT_RUN_S), until they add up to SHORT_RUNS_TOTAL_S."""
    m = Measurement(spec, trace)
    while len(m.wall_s) < repeat or (
        m.wall < SHORT_RUN_S and sum(m.wall_s) < SHORT_RUNS_TOTAL_S and len(m.wall_s) < SHORT_RUNS_MAX
    ):
        index = len(m.wall_s)
        label = f"{spec.backend} {spec.workload} {spec.size}" + (f" #{index + 1}/{repeat}" if repeat > 1 else "")
        try:
            run = run_once(spec, config, trace=trace)
        except BenchError as err:
            m.error = str(err)
            progress.line(f"{label}: ERROR {_first_line(m.error)}")
            return m
        m.wall_s.append(run.wall_s)
        m.cpu_s.append(run.cpu_s)
        m.startup_s.append(run.startup_s)
        m.ops, m.counters, m.latencies = run.ops, run.counters, m.latencies or run.latencies
        if index < repeat:
            progress.line(f"{label}: {m.mem_ops:,} mem ops in {run.wall_s:.2f} s = {m.mem_ops / run.wall_s:,.0f} "
                          f"ops/s (+{run.startup_s:.1f} s to start)")
    if len(m.wall_s) > repeat:
        print(f"    {len(m.wall_s)} runs in all, as its runs take under {SHORT_RUN_S} s: the median of "
              f"{len(m.wall_s)} counts ({m.ops_per_s:,.0f} ops/s)", flush=True)
    return m


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


class _Progress:
    """Numbered progress lines on stdout, flushed as they happen."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0

    def line(self, text: str) -> None:
        self.done += 1
        print(f"[{self.done:>{len(str(self.total))}}/{self.total}] {text}", flush=True)


# -- builds -------------------------------------------------------------------------------------------------------


def prepare(backend: str, config: MmuConfig) -> float:
    """Build (or find cached) what `backend` needs for `config`; the seconds it took. Runs before any timing."""
    start = time.perf_counter()
    build_for(backend, config)
    return time.perf_counter() - start


def measure_rebuild(config: MmuConfig) -> dict[str, float]:
    """A from-scratch build of `config` in a temporary directory: MyHDL's export, then Verilator + C++."""
    from cosim.backends.verilated import build_library
    from cosim.toolchain.export import exported_verilog

    with tempfile.TemporaryDirectory(prefix="mmucosim-rebuild-") as tmp:
        start = time.perf_counter()
        exported_verilog(config, Path(tmp))
        exported = time.perf_counter()
        build_library(config, build_root=Path(tmp))
        built = time.perf_counter()
    return {"export_s": exported - start, "verilate_s": built - exported, "total_s": built - start}


# -- a traced run at full size, as a user runs it -------------------------------------------------------------------

TRACED_MAX_RATIO = 2.0  # wall of `mmucosim run` (trace, summary, plots) over the untraced run's, both whole processes
TRACED_MAX_RSS_MB = 500.0
TRACED_MAX_TRACE_MB = 60.0
TRACED_PAIRS = 3  # untraced and traced runs alternate, as the machine's speed moves; the medians count


def untraced_child(n: int) -> None:
    """The untraced side of `measure_traced`: the workload on verilator, in a process of its own."""
    job = resolve("many_boxes", n=n)
    with contextlib.redirect_stdout(io.StringIO()):
        run_program(job.program, "verilator", args=dict(job.args), trace=False)


# Runs its arguments as a child and writes "wall-seconds peak-KiB exit-code" to the file named first. A fresh, small
# process in between: a child forked straight from the bench (which may have grown to gigabytes by then) would
# count the bench's pages in its own peak RSS until its exec.
_MEASURER = (
    "import os, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "child = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "open(sys.argv[1], 'w').write(f'{time.perf_counter() - start} {usage.ru_maxrss} "
    "{os.waitstatus_to_exitcode(status)}')\n"
)


def _child(argv: list[str], log: Path) -> tuple[float, float]:
    """Run `argv` to the end: (wall seconds, peak RSS in MB) of that process alone (os.wait4's rusage, taken by a
    small process in between: see _MEASURER)."""
    import subprocess

    figures = log.with_suffix(".measured")
    with log.open("w") as out:
        subprocess.run([sys.executable, "-c", _MEASURER, str(figures), *argv], stdout=out, stderr=subprocess.STDOUT,
                       check=False)
    what, said = " ".join(argv[2:]), _first_line(log.read_text()[-2000:])
    try:
        wall, peak_kib, code = figures.read_text().split()
    except (OSError, ValueError):
        raise BenchError(f"{what} could not be measured: {said}") from None
    if int(code):
        raise BenchError(f"{what} exited with {code}: {said}")
    return float(wall), int(peak_kib) / 1024  # ru_maxrss is in KiB on Linux


def measure_traced(n: int, progress: _Progress, *, pairs: int = TRACED_PAIRS) -> dict[str, Any]:
    """`mmucosim run many_boxes --n N --backend verilator` (Parquet trace, summary, plots) against the untraced
    workload, each a whole process (start-up and imports included) of its own, alternating `pairs` times."""
    record: dict[str, Any] = {"n": n, "untraced_wall_s": [], "traced_wall_s": [], "untraced_rss_mb": [],
                              "traced_rss_mb": []}
    DEFAULT_OUT.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="traced-", dir=DEFAULT_OUT.parent) as tmp:
        out = Path(tmp) / "run"
        untraced = [sys.executable, "-c", f"from cosim.bench import untraced_child; untraced_child({n})"]
        traced = [sys.executable, "-m", "cosim.cli", "run", "many_boxes", "--n", str(n), "--backend", "verilator",
                  "--out", str(out)]
        for index in range(pairs):
            wall, rss = _child(untraced, Path(tmp) / "untraced.log")
            record["untraced_wall_s"].append(wall)
            record["untraced_rss_mb"].append(rss)
            wall, rss = _child(traced, Path(tmp) / "traced.log")
            record["traced_wall_s"].append(wall)
            record["traced_rss_mb"].append(rss)
            progress.line(f"verilator many_boxes n={n:,} as processes #{index + 1}/{pairs}: untraced "
                          f"{record['untraced_wall_s'][-1]:.1f} s, {record['untraced_rss_mb'][-1]:.0f} MB; "
                          f"`mmucosim run` traced {wall:.1f} s, {rss:.0f} MB")
        record["trace_mb"] = (out / "trace.parquet").stat().st_size / 1e6
        record["events"] = json.loads((out / "summary.json").read_text())["total"]["operations"]
    record["untraced_s"] = statistics.median(record["untraced_wall_s"])
    record["traced_s"] = statistics.median(record["traced_wall_s"])
    record["ratio"] = record["traced_s"] / record["untraced_s"]
    record["peak_rss_mb"] = max(record["traced_rss_mb"])
    return record


def traced_checks(record: dict[str, Any]) -> list[Check]:
    """The traced run's targets: wall against the untraced run, peak memory, trace size."""
    if "error" in record:
        return [Check(f"traced many_boxes n={record['n']:,}", "runs", record["error"], "ERROR")]
    what = f"verilator many_boxes n={record['n']:,} traced ({record['events']:,} events)"
    return [
        Check(f"{what}: wall / untraced", f"<= {TRACED_MAX_RATIO:g}x",
              f"{record['traced_s']:.1f} s / {record['untraced_s']:.1f} s = {record['ratio']:.2f}x",
              "PASS" if record["ratio"] <= TRACED_MAX_RATIO else "MISS"),
        Check(f"{what}: peak RSS", f"<= {TRACED_MAX_RSS_MB:g} MB", f"{record['peak_rss_mb']:.0f} MB "
              f"(untraced {max(record['untraced_rss_mb']):.0f} MB)",
              "PASS" if record["peak_rss_mb"] <= TRACED_MAX_RSS_MB else "MISS"),
        Check(f"{what}: trace.parquet", f"<= {TRACED_MAX_TRACE_MB:g} MB", f"{record['trace_mb']:.1f} MB",
              "PASS" if record["trace_mb"] <= TRACED_MAX_TRACE_MB else "MISS"),
    ]


# -- report -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One target of the benchmark and what was measured for it."""

    what: str
    target: str
    measured: str
    status: str


def reference_rate(measurements: Sequence[Measurement], spec: RunSpec, trace: bool) -> float | None:
    """The ops/s of `reference` on the same workload and size in this benchmark, if it ran."""
    for m in measurements:
        same = (m.spec.backend, m.spec.workload, m.spec.n) == ("reference", spec.workload, spec.n)
        if same and m.trace == trace and m.error is None:
            return m.ops_per_s
    return None


def rtl_cycles_agree(measurements: Sequence[Measurement]) -> bool | None:
    """Whether the RTL backends' CYCLES counters agree on every workload and size two or more of them ran (None
    when no two did): they simulate the same Verilog, driven the same way (cosim.runner)."""
    runs: dict[tuple[str, int | None], list[int]] = {}
    for m in measurements:
        if m.rtl and m.error is None:
            runs.setdefault((m.spec.workload, m.spec.n), []).append(m.counters["cycles"])
    compared = [cycles for cycles in runs.values() if len(cycles) > 1]
    return all(len(set(cycles)) == 1 for cycles in compared) if compared else None


def checks(measurements: Sequence[Measurement], rebuild: dict[str, float] | None) -> list[Check]:
    """The targets besides the per-run rates: full many_boxes on verilator, equal cycles, the rebuild time."""
    out = []
    what = f"verilator many_boxes n={FULL.many_boxes:,} wall"
    for m in measurements:
        if (m.spec.backend, m.spec.workload) != ("verilator", "many_boxes"):
            continue
        seconds = VERILATOR_MANY_BOXES_MAX_S / (TRACE_TARGET_FACTOR if m.trace else 1)
        limit = f"< {seconds:g} s"
        if m.spec.n != FULL.many_boxes:
            out.append(Check(what, limit, f"not run: n={m.spec.n:,} only (--quick)", "-"))
        elif m.error:
            out.append(Check(what, limit, "error", "ERROR"))
        else:
            out.append(Check(what, limit, f"{m.wall:.2f} s", "PASS" if m.wall < seconds else "MISS"))
    agree = rtl_cycles_agree(measurements)
    if agree is not None:
        out.append(Check("RTL backends count the same cycles", "equal per workload and size",
                         "equal" if agree else "different: see the hardware table", "PASS" if agree else "MISS"))
    if rebuild is not None:
        status = "PASS" if rebuild["verilate_s"] < REBUILD_MAX_S else "MISS"
        out.append(Check("verilator rebuild (Verilate + compile)", f"< {REBUILD_MAX_S:g} s",
                         f"{rebuild['verilate_s']:.1f} s (+{rebuild['export_s']:.1f} s MyHDL export)", status))
    return out


def sweep_checks(scaling: dict[str, Any]) -> list[Check]:
    """The sweep's targets: 2 workers against 1, and the per-point overhead of second-long points."""
    one, two = scaling["runs"]
    speedup, overhead = scaling["speedup"], scaling["overhead"]
    return [
        Check("sweep: 2 workers against 1 (same grid)", f">= {scaling['target_speedup']:g}x",
              f"{speedup:.2f}x ({one['elapsed_s']:.1f} s -> {two['elapsed_s']:.1f} s, "
              f"{scaling['cpus']} CPUs; each point {scaling['point_slowdown_with_2']:.2f}x as long with 2)",
              "PASS" if speedup >= scaling["target_speedup"] else "MISS"),
        Check("sweep: the same on 2 free cores (projected)", f">= {scaling['target_speedup']:g}x",
              f"{scaling['projected_speedup_free_cores']:.2f}x (2 x workers busy {two['efficiency']:.0%} / "
              f"{one['efficiency']:.0%})", "-"),
        Check(f"sweep: overhead per point ({one['min_point_wall_s']:.1f} s+ points)",
              f"<= {scaling['target_overhead']:.0%} of its simulation",
              f"{overhead:.1%} ({one['overhead_per_point_s'] * 1000:.0f} ms per point)",
              "PASS" if overhead <= scaling["target_overhead"] else "MISS"),
    ]


def run_record(m: Measurement, ratio: float | None) -> dict[str, Any]:
    """The JSON record of one measurement."""
    record: dict[str, Any] = {
        "backend": m.spec.backend,
        "workload": m.spec.workload,
        "allocator": m.spec.allocator,
        "n": m.spec.n,
        "reduced": m.spec.reduced,
        "size": m.spec.size,
        "trace": m.trace,
        "target_ops_per_s": m.target,
        "status": m.status,
    }
    if m.error is not None:
        return record | {"error": m.error}
    counters = m.counters
    record |= {
        "wall_s": m.wall,
        "wall_s_runs": m.wall_s,
        "startup_s": statistics.median(m.startup_s),
        "mem_ops": m.mem_ops,
        "ops": m.ops,
        "ops_per_s": m.ops_per_s,
        "cpu_s": statistics.median(m.cpu_s),
        "ops_per_cpu_s": m.ops_per_cpu_s,
        "ratio_to_reference": ratio,
        "counters": counters,
        "tlb_hit_rate": _ratio(counters["tlb_hits"], counters["tlb_hits"] + counters["tlb_misses"]),
    }
    if m.rtl:  # `reference` has no clock: its CYCLES counts operations
        record |= {
            "cycles": counters["cycles"],
            "cycles_per_op": _ratio(counters["cycles"], m.ops + COUNTER_READS),
            "walk_cycles_per_walk": _ratio(counters["walk_cycles"], counters["walks"]),
        }
        if m.latencies is not None:
            record |= {"cycles_per_hit": m.latencies.cycles_per_hit,
                       "cycles_per_miss": m.latencies.cycles_per_miss, "latencies_from": m.latencies.source}
    return record


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def render_table(rows: Sequence[list[str]], header: Sequence[str], right: Container[int]) -> str:
    """A plain text table; the columns numbered in `right` are right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = []
    for row in (list(header), *rows):
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths,
                                                                                              strict=True))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def throughput_table(records: Sequence[dict[str, Any]]) -> str:
    header = ["backend", "workload", "size", "wall s", "mem ops", "ops/s", "x ref", "target ops/s", "status",
              "ops/CPU-s"]
    rows = []
    for r in records:
        target = f">= {r['target_ops_per_s']:,.0f}"
        if "error" in r:
            rows.append([r["backend"], r["workload"], r["size"], "-", "-", "-", "-", target, "ERROR", "-"])
            continue
        rows.append([r["backend"], r["workload"], r["size"], f"{r['wall_s']:.2f}", f"{r['mem_ops']:,}",
                     f"{r['ops_per_s']:,.0f}", _fmt(r["ratio_to_reference"], ".3f"), target, r["status"],
                     f"{r['ops_per_cpu_s']:,.0f}"])
    return render_table(rows, header, right={3, 4, 5, 6, 7, 9})


def hardware_table(records: Sequence[dict[str, Any]]) -> str:
    """Per RTL run: its cycle counters, and the hit and miss latencies of a traced run of its workload."""
    header = ["backend", "workload", "size", "cycles", "cycles/op", "walk cycles/walk", "TLB hit rate",
              "cycles/hit", "cycles/miss"]
    rows = []
    for r in records:
        if "cycles" not in r:
            continue
        rows.append([r["backend"], r["workload"], r["size"], f"{r['cycles']:,}", _fmt(r["cycles_per_op"], ".3f"),
                     _fmt(r["walk_cycles_per_walk"], ".2f"), _fmt(r["tlb_hit_rate"], ".4%"),
                     _fmt(r.get("cycles_per_hit"), ".2f"), _fmt(r.get("cycles_per_miss"), ".2f")])
    return render_table(rows, header, right={3, 4, 5, 6, 7, 8})


# -- the command --------------------------------------------------------------------------------------------------


def _names(text: str, choices: Sequence[str], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in choices:
            raise argparse.ArgumentTypeError(f"unknown {what} {name!r}; choose from {', '.join(choices)}")
    if not names:
        raise argparse.ArgumentTypeError(f"name at least one {what}")
    return list(dict.fromkeys(names))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run the same workloads on every backend and report wall time, firmware memory operations "
        "per second (loads + stores), each RTL backend's ratio to `reference`, and the hardware's cycles. "
        f"The slow backends ({', '.join(SLOW_BACKENDS)}) run reduced sizes, marked as such.",
    )
    parser.add_argument("--backends", type=lambda t: _names(t, BACKENDS, "backend"), default=list(BACKENDS),
                        metavar="LIST", help=f"comma-separated (default: all: {','.join(BACKENDS)})")
    parser.add_argument("--workloads", type=lambda t: _names(t, WORKLOADS, "workload"), default=list(WORKLOADS),
                        metavar="LIST", help=f"comma-separated (default: {','.join(WORKLOADS)})")
    parser.add_argument("--allocator", choices=list(ALLOCATORS), default=DEFAULT_ALLOCATOR,
                        help=f"the kernel's global allocator in every run (default {DEFAULT_ALLOCATOR})")
    parser.add_argument("--repeat", type=_positive, default=1, metavar="N", help="runs of each; the median counts")
    parser.add_argument("--trace", action="store_true", help="tracing on (targets are half)")
    quick = (f"smaller sizes: many_boxes n={QUICK.many_boxes:,} (slow backends {QUICK_REDUCED.many_boxes:,}), "
             f"random {QUICK.random_ops:,} operations ({QUICK_REDUCED.random_ops:,})")
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--no-rebuild", action="store_true",
                        help="skip the forced rebuild of the Verilated model (done when verilator is benchmarked)")
    parser.add_argument("--sweep", action="store_true",
                        help="also the sweep section: one grid on a local Dask cluster of 1, then 2 workers, on "
                             "reference (make bench turns it on)")
    parser.add_argument("--no-traced", action="store_true",
                        help="skip the traced full-size run (`mmucosim run many_boxes` on verilator against the "
                             "untraced run, as processes: wall, peak RSS, trace size; done when verilator is "
                             "benchmarked at full size)")
    parser.add_argument("--traced-n", type=_positive, default=FULL.many_boxes, metavar="N",
                        help=f"boxes of the traced run (default {FULL.many_boxes:,}; 3,500,000 is about 10 million "
                             "operations)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="FILE",
                        help=f"where the JSON results go (default {DEFAULT_OUT})")
    return parser


def _probe(measurements: Sequence[Measurement], config: MmuConfig, progress: _Progress) -> None:
    """Give untraced RTL runs the hit and miss latencies of one traced run of their workload, at the smallest
    size benchmarked, on the fastest RTL backend benchmarked. Latencies are per operation, so size does not change
    them, and every RTL backend has the same cycles (see `rtl_cycles_agree`)."""
    rtl = [m for m in measurements if m.rtl and m.error is None and m.latencies is None]
    if not rtl:
        return
    backend = min({m.spec.backend for m in rtl}, key=PROBE_PREFERENCE.index)
    for workload in dict.fromkeys(m.spec.workload for m in rtl):
        smallest = min((m.spec for m in measurements if m.spec.workload == workload), key=lambda s: s.n or 0)
        spec = RunSpec(backend, workload, smallest.n, smallest.reduced, smallest.allocator)
        label = f"{backend} {workload} {spec.size} traced, for the latencies"
        try:
            timing = run_once(spec, config, trace=True).latencies
        except BenchError as err:
            progress.line(f"{label}: ERROR {_first_line(str(err))}")
            continue
        assert timing is not None  # a traced RTL run
        progress.line(f"{label}: {_fmt(timing.cycles_per_hit, '.2f')} cycles per hit, "
                      f"{_fmt(timing.cycles_per_miss, '.2f')} per miss")
        for m in rtl:
            if m.spec.workload == workload:
                m.latencies = timing


def main(argv: Sequence[str] | None = None) -> int:
    """`mmucosim bench [options]`. Exit status 1 when a run could not be measured, else 0 (a MISS is a result)."""
    args = build_parser().parse_args(argv)
    config = MmuConfig()
    specs = plan(args.backends, args.workloads, quick=args.quick, allocator=args.allocator)
    rebuild_wanted = "verilator" in args.backends and not args.no_rebuild
    traced_wanted = "verilator" in args.backends and not args.no_traced and not args.quick
    probes = 0 if args.trace else len({s.workload for s in specs if s.backend in HDL_BACKENDS})
    progress = _Progress(len(args.backends) + len(specs) * args.repeat + probes + rebuild_wanted + 2 * args.sweep
                         + traced_wanted * TRACED_PAIRS)
    load_before = os.getloadavg()

    print(f"{PROG}: {len(specs)} runs x {args.repeat}, tracing {'on' if args.trace else 'off'}"
          f"{', quick sizes' if args.quick else ''}"
          f"{f', allocator {args.allocator}' if args.allocator != DEFAULT_ALLOCATOR else ''}; "
          f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f}")
    builds: dict[str, float | None] = {}  # seconds to build or find each backend's build
    for backend in args.backends:
        try:
            seconds = builds[backend] = prepare(backend, config)
            progress.line(f"{backend}: ready ({seconds:.1f} s to build or find its build)")
        except BackendError as err:
            builds[backend] = None
            progress.line(f"{backend}: cannot be built: {_first_line(str(err))}")

    measurements = []
    for spec in specs:
        if builds[spec.backend] is None:
            measurements.append(Measurement(spec, args.trace, error="the backend could not be built"))
            continue
        measurements.append(measure(spec, config, repeat=args.repeat, trace=args.trace, progress=progress))
    if not args.trace:
        _probe(measurements, config, progress)

    rebuild = None
    if rebuild_wanted:
        try:
            rebuild = measure_rebuild(config)
            progress.line(f"verilator forced rebuild: {rebuild['verilate_s']:.1f} s Verilate + compile, "
                          f"{rebuild['export_s']:.1f} s export")
        except BackendError as err:
            progress.line(f"verilator forced rebuild: ERROR {_first_line(str(err))}")

    traced = None
    if traced_wanted and builds.get("verilator") is not None:
        try:
            traced = measure_traced(args.traced_n, progress)
        except BenchError as err:
            traced = {"n": args.traced_n, "error": str(err)}
            progress.line(f"traced run: ERROR {_first_line(str(err))}")

    # the sweep: one grid on a local Dask cluster of 1 worker, then 2 (cosim.sweep.bench_scaling)
    scaling = None
    if args.sweep:
        from cosim.sweep import bench_scaling

        scaling = bench_scaling(quick=args.quick, line=progress.line)

    records = [run_record(m, _relative(m, measurements)) for m in measurements]
    found = checks(measurements, rebuild) + (traced_checks(traced) if traced else [])
    found += sweep_checks(scaling) if scaling else []
    write_results(args.out, records, found, rebuild, builds, args, config, load_before, traced, scaling)
    print_report(records, found, args)
    print(f"\nResults: {args.out}")
    return 1 if any(m.error for m in measurements) or (traced and "error" in traced) else 0


def _relative(m: Measurement, measurements: Sequence[Measurement]) -> float | None:
    if m.error is not None:
        return None
    rate = reference_rate(measurements, m.spec, m.trace)
    return m.ops_per_s / rate if rate else None


def write_results(out: Path, records: list[dict[str, Any]], found: list[Check], rebuild: dict[str, float] | None,
                  builds: dict[str, float | None], args: argparse.Namespace, config: MmuConfig,
                  load_before: tuple[float, float, float], traced: dict[str, Any] | None = None,
                  scaling: dict[str, Any] | None = None) -> None:
    document = {
        "runs": records,
        "traced": traced,
        "checks": [vars(check) for check in found],
        "rebuild": rebuild,
        "build_s": builds,
        "sweep": scaling,
        "options": {"backends": args.backends, "workloads": args.workloads, "repeat": args.repeat,
                    "trace": args.trace, "quick": args.quick, "allocator": args.allocator},
        "config": {name: int(value) for name, value in config.fields().items()},  # bram: all numbers
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")


def print_report(records: Sequence[dict[str, Any]], found: Sequence[Check], args: argparse.Namespace) -> None:
    median = f"median of {args.repeat}" if args.repeat > 1 else "one run each"
    print(f"\nThroughput ({median}; mem ops = the firmware's loads + stores; x ref = ops/s over reference's on "
          f"the same workload and size; tracing {'on, targets halved' if args.trace else 'off'}; ops/CPU-s = "
          "over the CPU time of the process that ran the workload, what an idle machine would show)")
    print(throughput_table(records))
    for r in records:
        if "error" in r:
            print(f"ERROR {r['backend']} {r['workload']} {r['size']}: {_first_line(r['error'])}")
    if any(r["reduced"] for r in records):
        print(f"(reduced): {', '.join(SLOW_BACKENDS)} are too slow for the full sizes and run smaller ones; "
              "reference runs them too, for the ratio.")
    if any("cycles" in r for r in records):
        print("\nHardware (cycles, cycles/op, walk cycles/walk, hit rate: the run's performance counters; "
              "cycles/hit and /miss: the events of a traced run, see latencies_from in the JSON)")
        print(hardware_table(records))
    if found:
        print("\nOther targets")
        print(render_table([[c.what, c.target, c.measured, c.status] for c in found],
                           ["what", "target", "measured", "status"], right=set()))


if __name__ == "__main__":
    sys.exit(main())
