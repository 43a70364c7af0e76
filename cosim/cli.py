"""`mmucosim`: run the kernel on an MMU backend and see what the TLB did.

    mmucosim demo                         the seed's kernel_main, with TLB tables, trace, plots and waves
    mmucosim run many_boxes --n 1000      any workload (see `mmucosim run --help`)
    mmucosim check --backends reference,verilator random --seed 3
    mmucosim replay allocs.txt --out results.jsonl
    mmucosim run many_boxes_long_lived --allocator bump    on one of the next chapter's allocators
    mmucosim compare-allocators random --backend verilator every allocator on one workload, side by side
    mmucosim verilog | synth | gatesim | bench

User errors (bad options, unknown workload, unreadable file, a backend that cannot start) print one clear
line and exit non-zero: 2 for bad input, 1 for a run that could not complete. A fault or panic in the kernel
is a result, reported as the kernel would, also with exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cosim import outputs
from cosim.analysis import trace
from cosim.analysis.context import attribute
from cosim.analysis.stale import StaleAccess, StaleDetector
from cosim.analysis.summary import Summary, SummaryBuilder, kind_table, percent, phase_table
from cosim.analysis.summary import write_json as write_summary
from cosim.backends import BACKENDS, HDL_BACKENDS, IN_PROCESS_BACKENDS, BackendError, check_memory, check_waves
from cosim.options import (
    EXIT_FAILED,
    EXIT_USAGE,
    UsageError,
    allocator_option,
    config_from,
    config_options,
    describe_config,
    is_kernel_failure,
    workload_options,
)
from cosim.outputs import AtomicFile, OutputError, RunFolder, guarded, write_lines
from cosim.program import ProgramError, ProgressCallback, RunResult
from cosim.runner import run_program
from cosim.stream import EventBatch, EventSink
from cosim.toolchain import gatesim, synth
from cosim.toolchain.export import config_tag
from cosim.workloads import REPLAY_PREFIX, WORKLOADS, Job, WorkloadError, resolve
from firmware.allocator import ALLOCATORS, DEFAULT_ALLOCATOR
from hdl.protocol import TIMING_FIELDS, MmuConfig

PROG = "mmucosim"


# -- argument parsing ----------------------------------------------------------------------------------------


def _backend_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown backend {unknown[0]!r}; choose from {', '.join(BACKENDS)}")
    if len(names) < 2 or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError("give at least two different backends, e.g. reference,verilator")
    return names


def _allocator_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ALLOCATORS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown allocator {unknown[0]!r}; choose from {', '.join(ALLOCATORS)}")
    if not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError("give one or more different allocators, e.g. lla,bump")
    return names


def _run_options(default_backend: str, *, out_dir: bool = True) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("run")
    group.add_argument("--backend", choices=BACKENDS, default=default_backend,
                       help=f"what simulates the MMU (default {default_backend}; verilator and myhdl: --memory bram "
                            "only)")
    group.add_argument("--waves", nargs="?", const="", type=Path, metavar="FILE",
                       help="write a waveform (RTL backends only; .vcd or .fst; "
                            "default FILE: waves.vcd in the output directory)")
    if out_dir:
        group.add_argument("--out", type=Path, metavar="DIR",
                           help="output directory (default build/run/<workload>-<backend>-<configuration>/, "
                                "or that name with -2, -3, … while another run uses it)")
    group.add_argument("--check-stale", action="store_true",
                       help="report accesses that used a stale TLB entry (a page-table change without flush)")
    group.add_argument("--no-plots", action="store_true", help="skip the PNG plots (faster on long runs)")
    _trace_format_option(group, default="parquet")
    return parent


TRACE_FORMAT_CHOICES = (*trace.TRACE_FORMATS, "none")


def _trace_format_option(group: argparse._ArgumentGroup, *, default: str, note: str = "") -> None:
    group.add_argument("--trace-format", choices=TRACE_FORMAT_CHOICES, default=default,
                       help="the trace file, one row per operation: Apache Parquet (typed columns, zstd; query it "
                            "with pandas, polars or DuckDB), CSV or JSON Lines (addresses as hex strings), or none "
                            f"(default {default}){note}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Co-simulate a synthesizable x86_64 MMU with the blog_os \"Heap Allocation\" kernel, and "
                    "trace what its TLB does.",
        epilog="Run `mmucosim COMMAND --help` for the options of each command.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config, knobs, allocator = config_options(), workload_options(), allocator_option()
    workloads = "\n".join(f"  {w.name:<22} {w.description}" for w in WORKLOADS.values())
    workloads += f"\n  {REPLAY_PREFIX + 'FILE':<22} an alloc/free script, as `mmucosim replay` takes"
    raw = argparse.RawDescriptionHelpFormatter

    commands.add_parser(
        "demo", parents=[config, _run_options("verilator"), allocator], formatter_class=raw,
        help="run the seed's kernel_main and show what the TLB did",
        description="Run the seed's kernel_main (Box, Vec, Rc on a paged heap): print what the kernel "
                    "prints, the TLB by phase and by firmware operation, and where the trace, plots and "
                    "waveform are.",
    )
    run = commands.add_parser(
        "run", parents=[config, _run_options("reference"), knobs, allocator], formatter_class=raw,
        help="run a workload with a TLB trace, summary and plots",
        description="Run a workload; stream its TLB trace (Parquet by default, see --trace-format), then write its "
                    "summary and plots.",
        epilog=f"workloads:\n{workloads}",
    )
    run.add_argument("workload", metavar="WORKLOAD", help="a workload name (below) or replay:FILE")
    replay = commands.add_parser(
        "replay", parents=[config, _run_options("reference", out_dir=False), allocator], formatter_class=raw,
        help="replay an alloc/free script on the kernel heap",
        description="Replay an alloc/free script (the format of firmware.replay; `mmucosim run random` "
                    "writes one as script.txt) on the kernel heap and write what each operation returned.",
    )
    replay.add_argument("script", metavar="TRACE", type=Path, help="the alloc/free script")
    replay.add_argument("--out", dest="results", type=Path, metavar="FILE",
                        help="where to write the results as JSON Lines (default: in the run's directory)")
    check = commands.add_parser(
        "check", parents=[config, knobs, allocator], formatter_class=raw,
        help="run a workload on several backends and compare every operation",
        description="Lockstep check: run WORKLOAD on each backend and compare every response and TLB event; "
                    "report the first divergence with its firmware context. Timing fields are skipped when "
                    "the reference model takes part.",
        epilog=f"workloads:\n{workloads}",
    )
    check.add_argument("workload", metavar="WORKLOAD", help="a workload name or replay:FILE")
    check.add_argument("--backends", type=_backend_list, default=["reference", "verilator"],
                       metavar="A,B[,...]", help="backends to compare (default reference,verilator)")
    check_output = check.add_argument_group("traces")
    _trace_format_option(check_output, default="none",
                         note="; each backend's trace goes to DIR/trace-<backend>.<format>")
    check_output.add_argument("--out", type=Path, metavar="DIR",
                              help="where --trace-format writes (default build/run/<workload>-check/)")
    compare = commands.add_parser(
        "compare-allocators", parents=[config, knobs], formatter_class=raw,
        help="run a workload on every global allocator and compare their costs and heaps",
        description="Run WORKLOAD traced once per global allocator and print, per allocator, memory operations "
                    "per alloc and per dealloc, TLB hits, misses and walks and cycles per alloc, the heap pages "
                    "touched and the fragmentation (free bytes that cannot serve the largest request); write the "
                    "plot (heap maps side by side, bars) and the numbers as JSON. A panic or fault in one "
                    "allocator's run (bump running out) is that allocator's result.",
        epilog=f"workloads:\n{workloads}",
    )
    compare.add_argument("workload", metavar="WORKLOAD", help="a workload name (not demo-dummy) or replay:FILE")
    compare.add_argument("--backend", choices=BACKENDS, default="reference",
                         help="what simulates the MMU (default reference)")
    compare.add_argument("--allocators", type=_allocator_list, default=list(ALLOCATORS), metavar="A,B[,...]",
                         help=f"allocators to compare, in this order (default {','.join(ALLOCATORS)})")
    compare.add_argument("--out", type=Path, metavar="DIR",
                         help="output directory (default build/compare/<workload>-<backend>-<configuration>/)")
    verilog = commands.add_parser(
        "verilog", parents=[config], help="export the Verilog of a configuration, with its integration kit",
        description="Convert the MyHDL design of a configuration to Verilog, and write beside it a self-checking "
                    "Verilog testbench (mmu_tb.v), a FuseSoC core (mmu.core: lint and sim targets) and the "
                    "configuration's datasheet (datasheet.md).",
    )
    verilog.add_argument("--out", type=Path, default=Path("build"), metavar="DIR",
                         help="build directory: the files go to DIR/verilog/<configuration>/ (default build)")
    verilog.add_argument("--ram-init", type=Path, metavar="FILE",
                         help="preload the RAM: $readmemh hex, one 64-bit word per line from word 0, @ADDR to jump "
                              "to a word address (default: the RAM starts as zeros)")
    verilog.add_argument("--lint", action="store_true", help="also run verilator --lint-only -Wall on it")
    timing_set = "\n".join(f"  {b.name:<14} {b.target.frequency_mhz:>3} MHz  {describe_config(b.sized)}"
                           for b in synth.TIMING_CLOSURE_SET)
    synth_command = commands.add_parser(
        "synth", parents=[config], formatter_class=raw,
        help="synthesize for iCE40 and ECP5 (Yosys, nextpnr): resources and Fmax",
        description="Synthesize for iCE40 and ECP5 and report resources and Fmax against issue 10's goals.\n"
                    "Without configuration options or --target: build the timing-closure set below, each with "
                    f"nextpnr seeds 1-{synth.SET_SEEDS}.\n"
                    "With them: build that one configuration for every device (or those --target names), with "
                    "seed 1 unless --seeds says more.\n"
                    "The RAM is sized for each device (64 KiB on the iCE40UP5K, 256 KiB on the ECP5-85F), so "
                    "--mem-bytes does not apply.",
        epilog=f"the timing-closure set (target frequency, configuration):\n{timing_set}",
    )
    synth_command.add_argument("--out", type=Path, default=Path("build/synth"), metavar="DIR",
                               help="output directory (default build/synth)")
    synth_command.add_argument("--target", action="append", choices=list(synth.TARGETS),
                               help="synthesize for this device only (repeatable; default: every device)")
    synth_command.add_argument("--seeds", type=int, metavar="N",
                               help=f"place and route each build with nextpnr seeds 1..N, in parallel; Fmax is "
                                    f"seed 1's, with the best and median (1..{synth.MAX_SEEDS}; default "
                                    f"{synth.SET_SEEDS} for the set, 1 for one configuration)")
    gatesim.add_command(commands, [config, knobs, allocator])
    commands.add_parser(
        "bench", add_help=False, help="throughput of every backend (options: mmucosim bench --help)",
    )
    commands.add_parser(
        "sweep", add_help=False, help="a grid of configurations × workloads on a Dask cluster (mmucosim sweep --help)",
    )
    return parser


# -- running -------------------------------------------------------------------------------------------------


@dataclass
class RunOutput:
    """A finished run and the files written for it."""

    result: RunResult
    job: Job
    out_dir: Path
    files: dict[str, list[Path]]  # what was written, by kind ("trace", "plots", ...)
    summary: Summary
    stale: list[StaleAccess]  # the first few (STALE_SHOWN); stale.txt has them all
    stale_count: int
    console: list[str]  # the lines the kernel printed
    events: int  # traced operations
    last_cycle: int | None  # the cycle of the last one


STALE_SHOWN = 100  # stale accesses kept in memory for the report; stale.txt has every one
# What a run may write into its folder: removed when a run starts, so that a failed run's folder holds no older
# run's results (the waveform is the backend's business).
RUN_OUTPUTS = (*trace.TRACE_FORMATS.values(), "summary.json", "tlb_hit_rate.png", "walk_latency.png",
               "heap_map.png", "stale.txt", "script.txt", "replay.jsonl", "waves.vcd", "waves.fst")


class _Tee:
    """An EventSink that hands each batch to several, in order, and counts what went by."""

    def __init__(self, sinks: Sequence[EventSink | None]) -> None:
        self.sinks = [sink for sink in sinks if sink is not None]
        self.events = 0
        self.last_cycle: int | None = None

    def write(self, batch: EventBatch) -> None:
        for sink in self.sinks:
            sink.write(batch)
        if len(batch):
            self.events += len(batch)
            self.last_cycle = int(batch.columns["cycle"][-1])


@contextlib.contextmanager
def _progress(message: str, backend: str) -> Iterator[ProgressCallback | None]:
    """A live display on stderr while a simulation runs (just `message` when stderr is not a terminal).

    In-process backends report every firmware context as it opens: the display counts operations and names the
    phase. The cocotb backends run the firmware inside the simulator, so for them it shows a running clock.
    """
    from tqdm import tqdm

    live = backend in IN_PROCESS_BACKENDS
    bar_format = "{desc} {n_fmt} operations [{elapsed}, {rate_fmt}]" if live else "{desc} {elapsed}"
    with tqdm(desc=message, bar_format=bar_format, unit="op", unit_scale=True, leave=False, disable=None,
              file=sys.stderr) as bar:
        if bar.disable:
            print(message, file=sys.stderr, flush=True)
        if live:
            phase = [""]

            def on_enter(label: str, depth: int, seq: int) -> None:
                if depth == 0 and label != phase[0]:
                    phase[0] = label
                    bar.set_description_str(f"{message} {label}", refresh=False)
                if seq - bar.n >= 20_000 or depth == 0:
                    bar.update(seq - bar.n)

            yield on_enter
            return
        done = threading.Event()

        def tick() -> None:
            while not done.wait(0.5):
                bar.refresh()

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield None
        finally:
            done.set()
            ticker.join()


def run_and_report(job: Job, backend: str, config: MmuConfig, folder: RunFolder, *, waves: Path | None,
                   check_stale: bool, plots: bool, trace_format: str = "parquet") -> RunOutput:
    """Run `job` with tracing, streaming its trace (`trace_format`, or "none"), summary, plots and stale-TLB report
    into `folder` (claimed by the caller). Every file appears whole or not at all; until the run has written them
    all the folder holds an INCOMPLETE marker, which a run that fails (or is interrupted) leaves behind with the
    reason. summary.json is written last."""
    folder.begin(RUN_OUTPUTS)
    try:
        output = _run_and_write(job, backend, config, folder.path, waves=waves, check_stale=check_stale, plots=plots,
                                trace_format=trace_format)
    except KeyboardInterrupt:
        folder.fail("interrupted (Ctrl-C)")
        raise
    except BaseException as err:
        folder.fail(f"{type(err).__name__}: {err}")
        raise
    folder.finish()
    return output


def _run_and_write(job: Job, backend: str, config: MmuConfig, out_dir: Path, *, waves: Path | None,
                   check_stale: bool, plots: bool, trace_format: str) -> RunOutput:
    from tqdm import tqdm

    from cosim.analysis.heap import HEAP_COLUMNS
    from cosim.analysis.plots import PlotData, plot_all

    files: dict[str, list[Path]] = {}
    if job.script:
        files["script"] = [write_lines(out_dir / "script.txt", (line + "\n" for line in job.script))]
    writer = trace.open_trace_writer(trace_format, out_dir) if trace_format != "none" else None
    # The heap map reads the events a second time, from the Parquet trace or, without one, from a scratch copy.
    scratch = None
    if plots and trace_format != "parquet":
        scratch = trace.ParquetTraceWriter(out_dir / ".events.parquet", contexts=False)
    summary_builder = SummaryBuilder()
    plot_data = PlotData() if plots else None
    stale_file = AtomicFile(out_dir / "stale.txt") if check_stale else None
    stale = None
    if stale_file is not None:
        def report(found: StaleAccess) -> None:
            with guarded(stale_file.path):
                stale_file.file.write(found.report() + "\n\n")

        stale = StaleDetector(config, keep=STALE_SHOWN, on_found=report)
    tee = _Tee([writer, scratch, summary_builder, plot_data, stale])
    console = io.StringIO()  # the kernel's println!, shown in the report rather than mixed with the clock
    try:
        try:
            with _progress(f"running {job.name} on {backend} …", backend) as progress, \
                    contextlib.redirect_stdout(console):
                result = run_program(job.program, backend, config, args=dict(job.args), trace=True, waves=waves,
                                     progress=progress, sink=tee)
        except BaseException:
            sys.stdout.write(console.getvalue())  # what the kernel printed before it stopped
            raise
        assert result.spans is not None  # a streamed run
        steps = ["trace", *(["plots"] if plots else []), "summary"]
        with tqdm(total=len(steps), desc="writing results", unit="step", leave=False, disable=None,
                  file=sys.stderr) as bar:
            if writer is not None:
                files["trace"] = [writer.close()]
            bar.update()
            if plot_data is not None:
                source = writer.path if trace_format == "parquet" else scratch.close()
                files["plots"] = plot_all(out_dir, plot_data, result.spans,
                                          lambda: trace.read_parquet_batches(source, HEAP_COLUMNS),
                                          f"{job.name} on {backend}", backend=backend, allocator=job.allocator)
                if scratch is not None:
                    scratch.path.unlink()
                bar.update()
            if stale_file is not None:
                if not stale.count:
                    with guarded(stale_file.path):
                        stale_file.file.write("no stale translation used\n")
                files["stale"] = [stale_file.commit()]
            summary = summary_builder.summary(result.spans.table, result.spans.phase_calls(),
                                              result.spans.kind_calls())
            files["summary"] = [write_summary(out_dir / "summary.json", summary, workload=job.name,
                                              backend=backend, config=config, wall_s=result.wall_s,
                                              allocator=job.allocator)]
            bar.update()
    except BaseException:
        for partial in (writer, scratch, stale_file):
            if partial is not None:
                partial.discard()
        if scratch is not None:
            with contextlib.suppress(OSError):
                scratch.path.unlink(missing_ok=True)
        raise
    if waves is not None:
        if not waves.is_file() or waves.stat().st_size == 0:
            raise outputs.OutputError(f"{backend} wrote no waveform to {waves}")
        files["waveform"] = [waves]
    return RunOutput(result, job, out_dir, files, summary, stale.found if stale else [], stale.count if stale else 0,
                     console.getvalue().splitlines(), tee.events, tee.last_cycle)


def _waves_path(args: argparse.Namespace, out_dir: Path, *, default_on: bool) -> Path | None:
    """`--waves FILE`, `--waves` (waves.vcd in the output directory), or the command's default; a name the
    backend cannot write is a usage error."""
    if args.waves is None and not (default_on and args.backend in HDL_BACKENDS):
        return None
    waves = args.waves if isinstance(args.waves, Path) else out_dir / "waves.vcd"
    try:
        check_waves(args.backend, waves)
    except BackendError as err:
        raise UsageError(f"--waves: {err}") from None
    return waves


GLOSSARY = """\
How to read the tables
  TLB hit     the translation was cached in the TLB: no page-table access at all
  TLB miss    the MMU walked the page tables: up to 4 PTE reads (PML4, PDPT, PD, PT), fewer when the
              paging-structure cache (PWC) still held the upper levels from an earlier walk
  A/D writes  the MMU setting the Accessed (and, on a store, Dirty) bit in the entries it used
  boot        the bootloader builds the page tables with paging off: no translation, so no TLB
  self/incl.  operations a kernel function issued itself / including those of the functions it called"""


def _print_run(output: RunOutput, *, kinds_limit: int | None = 15, glossary: bool = False) -> None:
    result = output.result
    value = result.value
    returned_lines = isinstance(value, list) and all(isinstance(line, str) for line in value)
    # a simulator running in its own process keeps the kernel's stdout: then the lines it returned stand in
    printed = output.console or (value if returned_lines else [])
    print()
    if printed:
        print("Kernel output")
        print("".join(f"  {line}\n" for line in printed), end="")
    if result.fault is not None:
        print(f"The kernel faulted: {value}")
    elif isinstance(value, list) and all(isinstance(r, dict) and "addr" in r for r in value):
        failed = sum(r["addr"] is None for r in value)
        print(f"Result: {len(value):,} allocations replayed (alloc and realloc), {failed:,} of them failed")
    elif value is not None and not returned_lines:
        text = repr(value)
        print(f"Result: {text if len(text) < 200 else text[:200] + ' …'}")
    total = output.summary.total
    cycles = ""
    if output.last_cycle is not None and result.backend != "reference":
        cycles = f", {output.last_cycle:,} cycles"
    allocator = output.job.allocator
    on = f" with the {allocator} allocator" if allocator not in (None, DEFAULT_ALLOCATOR) else ""
    print(f"\n{output.events:,} operations{cycles} in {result.wall_s:.2f} s on {result.backend}{on}; "
          f"TLB hit rate {percent(total.hit_rate)}")
    print("\nTLB by phase")
    print(_indent(phase_table(output.summary)))
    print("\nTLB by firmware operation (self: issued by the operation itself; incl.: with what it calls)")
    print(_indent(kind_table(output.summary, limit=kinds_limit)))
    if glossary:
        print(f"\n{GLOSSARY}")
    if output.stale:
        count = output.stale_count
        print(f"\n{count:,} access{'es' if count > 1 else ''} used a stale translation; the first:")
        print(_indent(output.stale[0].report()))
    elif "stale" in output.files:
        print("\nStale-TLB check: every access used the translation the page tables give.")
    print(f"\nFiles in {output.out_dir}/")
    notes = {"trace": f"one row per operation, {output.events:,} in all",
             "waveform": "open it with GTKWave or Surfer", "script": "replay it with `mmucosim replay`"}
    for name, paths in output.files.items():
        names = ", ".join(str(p.relative_to(output.out_dir) if p.is_relative_to(output.out_dir) else p.resolve())
                          for p in paths)
        print(f"  {name:<9} {names}" + (f"  ({notes[name]})" if name in notes else ""))


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _run_job(
    args: argparse.Namespace, job: Job, *, default_waves: bool, results: Path | None = None
) -> RunOutput:  # fmt: skip
    """Claim the run's folder and check every output path (before the simulation starts), then run `job`."""
    config = config_from(args)
    _check_memory(args.backend, config)
    explicit = getattr(args, "out", None)
    folder = outputs.claim(explicit or outputs.default_run_dir(job.slug, args.backend, config_tag(config)),
                           explicit=explicit is not None)
    try:
        waves = _waves_path(args, folder.path, default_on=default_waves)
        for path in (waves, results):
            if path is not None:
                outputs.check_output_file(path, inputs=job.inputs)
        return run_and_report(job, args.backend, config, folder, waves=waves, check_stale=args.check_stale,
                              plots=not args.no_plots, trace_format=args.trace_format)
    finally:
        folder.release()


def _check_memory(backend: str, config: MmuConfig) -> None:
    """A usage error, before anything runs, when `backend` does not simulate `config.memory`."""
    try:
        check_memory(backend, config)
    except BackendError as err:
        raise UsageError(f"--memory {config.memory}: {err}") from None


def _exit_status(output: RunOutput) -> int:
    """1 when the kernel faulted or used a stale translation: the run found a problem."""
    return EXIT_FAILED if output.stale_count or output.result.fault is not None else 0


# -- commands ------------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    config = config_from(args)
    _check_memory(args.backend, config)
    job = resolve("demo", allocator=args.allocator)
    _waves_path(args, Path("."), default_on=True)  # a waves file the backend cannot write: refused before the banner
    print(f"mmucosim demo: blog_os \"Heap Allocation\" kernel_main on the {args.backend} MMU")
    print(f"  {describe_config(config)}")
    if job.allocator != DEFAULT_ALLOCATOR:
        print(f"  global allocator: {job.allocator} (the \"Allocator Designs\" chapter's)")
    output = _run_job(args, job, default_waves=True)
    _print_run(output, kinds_limit=10, glossary=True)
    return _exit_status(output)


def cmd_run(args: argparse.Namespace) -> int:
    job = resolve(args.workload, n=args.n, seed=args.seed, ops=args.ops, allocator=args.allocator)
    output = _run_job(args, job, default_waves=False)
    _print_run(output)
    return _exit_status(output)


def cmd_replay(args: argparse.Namespace) -> int:
    job = resolve(f"{REPLAY_PREFIX}{args.script}", allocator=args.allocator)
    output = _run_job(args, job, default_waves=False, results=args.results)
    if output.result.fault is None:
        results = args.results or output.out_dir / "replay.jsonl"
        write_lines(results, (json.dumps(record) + "\n" for record in output.result.value))
        output.files["results"] = [results]
    _print_run(output)
    return _exit_status(output)


def cmd_check(args: argparse.Namespace) -> int:
    job = resolve(args.workload, n=args.n, seed=args.seed, ops=args.ops, allocator=args.allocator)
    config = config_from(args)
    for backend in args.backends:
        _check_memory(backend, config)
    if args.out is not None and args.trace_format == "none":
        raise UsageError("--out is where --trace-format writes the traces: give a --trace-format too")
    folder = None
    if args.trace_format != "none":  # the traces' folder, claimed before anything runs
        folder = outputs.claim(args.out or Path("build") / "run" / f"{job.slug}-check", explicit=args.out is not None)
    try:
        return _check(args, job, config, folder.path if folder else None)
    finally:
        if folder is not None:
            folder.release()


def _check(args: argparse.Namespace, job: Job, config: MmuConfig, out_dir: Path | None) -> int:
    from tqdm import tqdm

    from cosim.analysis.lockstep import first_divergence

    on = f" with the {job.allocator} allocator" if job.allocator not in (None, DEFAULT_ALLOCATOR) else ""
    print(f"lockstep check of {job.name}{on} on {', '.join(args.backends)}")
    print(f"  {describe_config(config)}")
    if "reference" in args.backends:
        timing = ", ".join(TIMING_FIELDS)
        rtl = "compared between the RTL backends only" if len(args.backends) > 2 else "not compared"
        print(f"  timing fields ({timing}): {rtl}, as the reference model has no clock")
    runs = []
    for backend in tqdm(args.backends, desc="backends", unit="backend", leave=False, disable=None,
                        file=sys.stderr):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the kernel's println!
            runs.append(run_program(job.program, backend, config, args=dict(job.args), trace=True))
        written = ""
        if out_dir is not None:
            written = f"  -> {_write_check_trace(runs[-1], args.trace_format, out_dir)}"
        print(f"  {backend:<17} {len(runs[-1].events):>12,} operations  {time.perf_counter() - start:8.2f} s"
              f"{written}")
    divergence = first_divergence(runs)
    if divergence is None:
        print(f"\nOK: all {len(runs[0].events):,} operations agree, and so do the results.")
        return 0
    print()
    print(divergence.report())
    return EXIT_FAILED


def _write_check_trace(run: RunResult, trace_format: str, out_dir: Path) -> Path:
    """A backend's trace of a lockstep check, as `out_dir`/trace-<backend>.<format>."""
    name = trace.TRACE_FORMATS[trace_format].replace("trace.", f"trace-{run.backend}.")
    writers = {"parquet": trace.write_parquet, "csv": trace.write_csv, "jsonl": trace.write_jsonl}
    return writers[trace_format](out_dir / name, run.events, attribute(run.events, run.contexts))


def cmd_compare_allocators(args: argparse.Namespace) -> int:
    from cosim.compare import AllocatorStats, ComparisonError, compare_allocators

    config = config_from(args)
    _check_memory(args.backend, config)
    job = resolve(args.workload, n=args.n, seed=args.seed, ops=args.ops)  # refuses a bad workload before printing
    folder = outputs.claim(args.out or outputs.default_run_dir(job.slug, args.backend, config_tag(config), "compare"),
                           explicit=args.out is not None)
    out_dir = folder.path
    print(f"{job.name} on {args.backend}, once per allocator: {', '.join(args.allocators)}")
    print(f"  {describe_config(config)}")
    count = iter(range(1, len(args.allocators) + 1))

    @contextlib.contextmanager
    def running(name: str) -> Iterator[ProgressCallback | None]:
        message = f"[{next(count)}/{len(args.allocators)}] {name} on {args.backend} …"
        with _progress(message, args.backend) as progress, contextlib.redirect_stdout(io.StringIO()):
            yield progress  # the kernel's println! is not part of the comparison

    def measured(stats: AllocatorStats, seconds: float) -> None:
        print(f"  {stats.allocator:<17} {stats.operations:>12,} operations  {seconds:8.2f} s  {stats.result}",
              flush=True)

    try:
        comparison = compare_allocators(args.workload, args.allocators, backend=args.backend, config=config,
                                        n=args.n, seed=args.seed, ops=args.ops, running=running,
                                        measured=measured)
    except ComparisonError as err:
        folder.release()
        raise UsageError(str(err)) from None
    print()
    print(comparison.table())
    try:
        files = [comparison.write_json(out_dir / "comparison.json"), comparison.plot(out_dir / "allocators.png")]
    finally:
        folder.release()
    print(f"\nFiles in {out_dir}/")
    print(f"  numbers  {files[0].name}\n  plot     {files[1].name}  (heap maps side by side, costs as bars)")
    return EXIT_FAILED if any(s.error is not None for s in comparison.stats.values()) else 0


def cmd_verilog(args: argparse.Namespace) -> int:
    from cosim.toolchain.export import RamInitError, VerilogLintError, lint
    from cosim.toolchain.kit import write_kit

    config = config_from(args, simulated=False)
    try:
        files = write_kit(config, args.out, ram_init=args.ram_init)
    except RamInitError as err:
        raise UsageError(f"--ram-init: {err}") from None
    except OSError as err:
        raise outputs.UnusablePath(f"cannot write the Verilog into {args.out}: {err.strerror or err}") from None
    path = files[0]
    notes = {"mmu.v": "the MMU, module mmu" + (f", RAM preloaded from {args.ram_init}" if args.ram_init else ""),
             "mmu_tb.v": "a self-checking testbench: iverilog -g2012 mmu.v mmu_tb.v",
             "mmu.core": "FuseSoC core: fusesoc --cores-root DIR run --target lint|sim|sim_verilator "
                         "mmucosim:mmu:mmu",
             "datasheet.md": "ports, timing, encodings, CSRs, cycles of this configuration"}
    print(f"Verilog of the {describe_config(config)}, in {path.parent}/:")
    for file in files:
        print(f"  {file.name:<13} {notes.get(file.name, '')}")
    if args.lint:
        try:
            lint(path)
        except VerilogLintError as err:
            print(err, file=sys.stderr)
            return EXIT_FAILED
        print("verilator --lint-only -Wall: clean")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    if args.mem_bytes is not None:
        raise UsageError("synth sizes the RAM for each device (see mmucosim synth --help): drop --mem-bytes")
    # The configuration options are named after MmuConfig's fields: any of them given means one configuration.
    custom = args.target is not None or any(getattr(args, f.name) is not None for f in dataclasses.fields(MmuConfig))
    seeds = (1 if custom else synth.SET_SEEDS) if args.seeds is None else args.seeds
    if not 1 <= seeds <= synth.MAX_SEEDS:
        raise UsageError(f"--seeds must be 1..{synth.MAX_SEEDS}, got {seeds}")
    builds = (synth.custom_builds(config_from(args, simulated=False), args.target or synth.TARGETS) if custom
              else synth.TIMING_CLOSURE_SET)
    print(f"Synthesizing {', '.join(build.name for build in builds)}: Yosys once each, then nextpnr seeds 1-{seeds}",
          flush=True)
    reports = synth.run(builds, args.out, seeds=seeds, progress=lambda line: print(f"  {line}", flush=True))
    print()
    print(synth.format_report(reports))
    print(f"Reports: {args.out / 'report.txt'}, {args.out / 'report.json'}")
    return 0


def cmd_bench(argv: list[str]) -> int:
    from cosim.bench import main as bench_main

    return int(bench_main(argv) or 0)


def cmd_sweep(argv: list[str]) -> int:
    from cosim.sweep import main as sweep_main

    return int(sweep_main(argv) or 0)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": cmd_demo, "run": cmd_run, "replay": cmd_replay, "check": cmd_check,
    "compare-allocators": cmd_compare_allocators, "verilog": cmd_verilog, "synth": cmd_synth,
    "gatesim": gatesim.command,
}


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: the exit status of a command that ran (0 ok, 1 it found a problem); an error exits
    through the parser with one line (1 the run could not complete, 2 bad input, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        if argv[:1] == ["bench"]:
            return cmd_bench(argv[1:])
        if argv[:1] == ["sweep"]:
            return cmd_sweep(argv[1:])
        args = parser.parse_args(argv)
        return COMMANDS[args.command](args)
    except (UsageError, WorkloadError) as err:
        parser.exit(EXIT_USAGE, f"{PROG}: error: {err}\n")
    except ProgramError as err:
        parser.exit(EXIT_FAILED, f"{PROG}: {err}\n")
    except synth.SynthesisError as err:  # a missing tool or a tool that failed, with its message
        parser.exit(EXIT_FAILED, f"{PROG}: synthesis failed: {err}\n")
    except BackendError as err:
        parser.exit(EXIT_FAILED, f"{PROG}: backend error: {err}\n")
    except outputs.UnusablePath as err:  # a path the user gave (or the default) cannot be used
        parser.exit(EXIT_USAGE, f"{PROG}: error: {err}\n")
    except OutputError as err:  # writing an output failed (a full disk): the run could not complete
        parser.exit(EXIT_FAILED, f"{PROG}: {err}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"\n{PROG}: interrupted\n")
    except OSError as err:
        parser.exit(EXIT_FAILED, f"{PROG}: {err}\n")
    except Exception as err:
        if is_kernel_failure(err):
            parser.exit(EXIT_FAILED, f"{PROG}: the kernel stopped: {type(err).__name__}: {err}\n")
        raise


if __name__ == "__main__":
    sys.exit(main())
