"""`mmucosim sweep`: the grid, where a row's numbers come from, the results folder (resume, errors), the Pareto
front, the build cache across processes, and a real Dask cluster over TCP. Reference backend only: no build.

No timing is asserted: `make bench` measures the cluster's scaling.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from cosim import sweep
from cosim.analysis.context import attribute
from cosim.analysis.summary import summarize
from cosim.backends import BackendError
from cosim.cli import main as cli_main
from cosim.program import MEASURED_PROGRAM
from cosim.runner import run_program
from cosim.sweep import Grid, expand, pareto_front, parse_values, run_sweep
from cosim.workloads import resolve
from hdl.protocol import MmuConfig, TlbPolicy

# a small grid: (demo + random at 2 seeds) x 2 TLB sizes x 2 PWCs = 12 points, each well under a second
SMALL = ["demo", "random", "--seed", "0-1", "--ops", "300", "--tlb-entries", "4,16", "--pwc-entries", "0,8"]


def _grid(*argv: str) -> Grid:
    return sweep.grid_from(sweep.build_parser().parse_args(list(argv)))[0]


# -- the grid --------------------------------------------------------------------------------------------------


def test_values_take_comma_lists_ranges_and_the_clis_own_types():
    assert parse_values(sweep.dimension("seed"), "0-3,7,2") == (0, 1, 2, 3, 7)
    assert parse_values(sweep.dimension("mem-bytes"), "64K, 1M,1048576") == (1 << 16, 1 << 20)
    assert parse_values(sweep.dimension("tlb_policy"), "plru,fifo") == ("plru", "fifo")
    assert parse_values(sweep.dimension("backend"), "reference,verilator") == ("reference", "verilator")
    for name, text, message in (("tlb_policy", "lru", "not one of"), ("mem_bytes", "lots", "not a size"),
                                ("seed", "3-1", "empty range"), ("backend", "spice", "unknown backend"),
                                ("tlb_entries", ",", "at least one value")):
        with pytest.raises(sweep.SweepError, match=message):
            parse_values(sweep.dimension(name), text)


def test_every_mmu_option_of_the_cli_is_a_dimension():
    from cosim.options import config_options

    options = {a.dest for a in config_options()._actions if a.option_strings and a.dest != "help"}
    assert options <= {d.name for d in sweep.dimensions() if d.kind == "config"}
    assert {"n", "seed", "ops", "backend"} <= {d.name for d in sweep.dimensions()}


def test_knobs_apply_only_to_the_workloads_that_take_them():
    points, dropped = expand(_grid("demo", "many_boxes", "random", "--n", "100,200", "--seed", "0-2"))
    assert dropped == []
    assert [(p.workload, p.knobs) for p in points] == [
        ("demo", {}),
        ("many_boxes", {"n": 100}), ("many_boxes", {"n": 200}),
        ("random", {"seed": 0}), ("random", {"seed": 1}), ("random", {"seed": 2}),
    ]
    assert points[1].job.args == {"n": 100}
    assert len({p.key for p in points}) == len(points)


def test_configurations_the_hardware_cannot_have_are_left_out_once():
    points, dropped = expand(_grid("demo", "--tlb-entries", "4,16", "--tlb-ways", "0,8", "--backend",
                                   "reference,verilator"))
    configs = {(p.config.tlb_entries, p.config.tlb_ways) for p in points}
    assert configs == {(4, 0), (16, 0), (16, 8)}
    assert len(points) == 6  # 3 configurations x 2 backends
    assert len(dropped) == 1 and "--tlb-entries 4, --tlb-ways 8" in dropped[0] and "tlb_ways" in dropped[0]


def test_the_key_names_the_configuration_the_backend_the_replay_script_and_the_code_version(tmp_path):
    script = tmp_path / "allocs.txt"
    script.write_text('{"op":"alloc","id":1,"size":64,"align":8}\n')
    first = expand(Grid((f"replay:{script}",)), version="src-a")[0][0]
    assert first.key == expand(Grid((f"replay:{script}",)), version="src-a")[0][0].key
    assert first.key != expand(Grid((f"replay:{script}",)), version="src-b")[0][0].key
    assert first.key != expand(Grid((f"replay:{script}",), {"backend": ("verilator",)}), version="src-a")[0][0].key
    script.write_text('{"op":"alloc","id":1,"size":128,"align":8}\n')
    assert first.key != expand(Grid((f"replay:{script}",)), version="src-a")[0][0].key


def test_a_grid_file_is_read_and_the_command_line_replaces_its_values(tmp_path):
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text(textwrap.dedent("""\
        workloads = ["many_boxes", "random"]
        n = 500
        seed = "0-2"
        tlb-entries = [4, 8, 16]
        tlb_policy = ["plru", "fifo"]
        out = "somewhere"
        workers = 1
        """))
    grid, settings = sweep.grid_from(sweep.build_parser().parse_args(["--grid", str(grid_file), "--seed", "5"]))
    assert grid.workloads == ("many_boxes", "random")
    assert grid.values == {"n": (500,), "seed": (5,), "tlb_entries": (4, 8, 16), "tlb_policy": ("plru", "fifo")}
    assert settings == {"out": "somewhere", "workers": 1}
    grid_file.write_text("tlb_sets = [4]\nworkloads = ['demo']\n")
    with pytest.raises(sweep.SweepError, match="no dimension 'tlb_sets'"):
        sweep.grid_from(sweep.build_parser().parse_args(["--grid", str(grid_file)]))


def test_a_sweep_without_workloads_or_with_a_bad_value_exits_2(capsys):
    for argv, message in ((["sweep", "--tlb-entries", "4"], "name at least one workload"),
                          (["sweep", "demo", "--tlb-entries", "four"], "--tlb-entries")):
        with pytest.raises(SystemExit) as exit_:
            cli_main(argv)
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err


# -- a row -----------------------------------------------------------------------------------------------------


def test_the_counters_of_an_untraced_run_equal_the_summary_of_a_traced_one():
    """Why a point runs untraced: its counters give the same totals as summarizing every event."""
    config = MmuConfig(tlb_entries=4, pwc_entries=0)
    job = resolve("random", seed=3, ops=300)
    with contextlib.redirect_stdout(io.StringIO()):
        traced = run_program(job.program, "reference", config, args=dict(job.args), trace=True)
        untraced = run_program(MEASURED_PROGRAM, "reference", config, args={"program": job.program,
                                                                          "args": dict(job.args)})
    total = summarize(traced.events, attribute(traced.events, traced.contexts), traced.contexts).total
    counters = untraced.value["counters"]
    assert total.tlb_misses > 50  # a 4-entry TLB on random: the comparison is not vacuous
    for name in ("tlb_hits", "tlb_misses", "walks", "pte_reads", "walk_cycles", "ad_writes"):
        assert counters[name] == getattr(total, name), name
    assert counters["loads"] + counters["stores"] == total.memory_ops


def test_a_row_has_its_parameters_counters_and_rates():
    point = expand(_grid("random", "--seed", "2", "--ops", "200", "--tlb-entries", "8", "--tlb-policy", "fifo"))[0][0]
    row = sweep.run_point(point)
    assert row["status"] == "ok" and row["error"] is None
    assert (row["workload"], row["seed"], row["ops"], row["n"]) == ("random", 2, 200, None)
    assert (row["tlb_entries"], row["tlb_policy"], row["backend"]) == (8, "fifo", "reference")
    assert row["mem_ops"] == row["loads"] + row["stores"] > 0
    assert row["hit_rate"] == row["tlb_hits"] / (row["tlb_hits"] + row["tlb_misses"])
    assert row["mem_ops_per_s"] == pytest.approx(row["mem_ops"] / row["wall_s"])
    assert row["point_s"] >= row["wall_s"] > 0 and row["cpu_s"] > 0
    assert row["pte_reads"] >= row["walks"] > 0 and row["pwc_hits"] > 0
    assert all(row[column] is None for column in sweep.TIMING_COLUMNS)  # the reference model has no clock
    assert row["key"] == point.key and row["version"] == sweep.code_version()


def test_a_failing_simulator_a_panic_and_another_code_version_become_rows(monkeypatch):
    point = expand(_grid("demo"))[0][0]

    def broken(*args, **kwargs):
        raise BackendError("verilator: the model hung")

    monkeypatch.setattr("cosim.runner.run_program", broken)
    row = sweep.run_point(point)
    assert (row["status"], row["error"]) == ("error", "BackendError: verilator: the model hung")
    assert row["tlb_hits"] is None and row["workload"] == "demo"
    monkeypatch.undo()
    runs_out = expand(_grid("many_boxes_long_lived", "--allocator", "bump"))[0][0]  # the chapter's expected failure
    row = sweep.run_point(runs_out)
    assert row["status"] == "panic" and "allocation error" in row["error"]
    stale = expand(Grid(("demo",)), version="src-000000000000")[0][0]
    row = sweep.run_point(stale)
    assert row["status"] == "error" and "code version" in row["error"]


def test_a_build_failure_is_the_rows_error_without_running():
    point = expand(_grid("demo", "--backend", "verilator"))[0][0]
    row = sweep.run_point(point, build_failure="BuildError: verilator failed (exit 1)")
    assert row["status"] == "error" and "the verilator build failed: BuildError" in row["error"]


# -- the Pareto front ------------------------------------------------------------------------------------------


def test_pareto_front_keeps_the_rows_no_smaller_or_equal_tlb_beats():
    table = pd.DataFrame({
        "tlb_entries": [4, 4, 8, 8, 16, 32, 64, 64, 128],
        "cycles_per_mem_op": [2.5, 2.2, 2.4, 1.9, 1.9, 1.5, 1.5, None, 1.6],
        "name": ["a", "b", "c", "d", "e", "f", "g", "h", "i"],
    })
    front = pareto_front(table)
    # b beats a (same size, fewer cycles); c is beaten by b; e and g tie with smaller d and f; h has no cycles
    assert list(front["name"]) == ["b", "d", "f"]


def test_pareto_report_averages_seeds_and_names_the_front():
    rows = []
    for entries, miss_rates in ((4, (0.04, 0.06)), (8, (0.02, 0.02)), (16, (0.02, 0.02))):
        for seed, miss in enumerate(miss_rates):
            rows.append({"workload": "random", "n": None, "seed": seed, "ops": 1000, "backend": "reference",
                         **sweep.config_columns(MmuConfig(tlb_entries=entries)), "status": "ok",
                         "hit_rate": 1 - miss, "walk_cycles_per_mem_op": None, "cycles_per_mem_op": None,
                         "tlb_misses": 10, "walks": 10, "walk_cycles": 10, "pte_reads": 20, "pwc_hits": 5,
                         "mem_ops": 1000, "wall_s": 0.1})
    report = sweep.pareto_report(pd.DataFrame(rows))
    assert report.startswith("random ops=1000 on reference, mean of 2 seeds: 2 of 3 configurations on the front")
    lines = report.splitlines()
    assert lines[3].split()[:2] == ["4", "0.0500"] and lines[4].split()[:2] == ["8", "0.0200"]
    assert len(lines) == 5


# -- the results folder: resume, interruption, errors ----------------------------------------------------------


def _files(out: Path) -> dict[str, tuple[int, int]]:
    return {p.stem: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "points").glob("*.parquet")}


def test_an_interrupted_sweep_resumes_and_a_rerun_skips_finished_points(tmp_path, monkeypatch):
    grid = _grid(*SMALL)
    total = len(expand(grid)[0])
    assert total == 12  # demo at 4 configurations (it takes no seed), random at 2 seeds x 4
    write = sweep.PointStore.write
    written = []

    def interrupted_after_3(store, row):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(row["key"])
        return write(store, row)

    monkeypatch.setattr(sweep.PointStore, "write", interrupted_after_3)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(grid, tmp_path, workers=1, progress=False, log=lambda _: None)
    monkeypatch.undo()
    assert set(_files(tmp_path)) == set(written)  # what was written is complete; nothing else is there
    assert not list((tmp_path / "points").glob(".*"))  # no temporary left behind
    before = _files(tmp_path)

    resumed = run_sweep(grid, tmp_path, workers=1, progress=False, log=lambda _: None)
    assert (resumed.ran, resumed.skipped) == (total - 3, 3)
    assert all(_files(tmp_path)[key] == before[key] for key in written)  # not run again, not rewritten
    assert len(resumed.table) == total and set(resumed.table["status"]) == {"ok"}

    again = run_sweep(grid, tmp_path, workers=1, progress=False, log=lambda _: None)
    assert (again.ran, again.skipped, again.workers) == (0, total, 0)  # no cluster even started
    on_disk = pd.read_parquet(tmp_path / "sweep.parquet")
    assert list(on_disk["key"]) == [p.key for p in expand(grid)[0]]
    assert len(pd.read_csv(tmp_path / "sweep.csv")) == total


def test_a_point_that_panics_is_a_row_and_the_sweep_goes_on(tmp_path, capsys):
    grid = ["many_boxes_long_lived", "--allocator", "lla,bump", "--tlb-entries", "4,8"]  # bump runs out of heap
    code = cli_main(["sweep", *grid, "--out", str(tmp_path), "--workers", "1"])
    out = capsys.readouterr().out
    assert code == 1  # some point did not finish ok
    table = pd.read_parquet(tmp_path / "sweep.parquet")
    assert len(table) == 4
    assert sorted(table["status"]) == ["ok", "ok", "panic", "panic"]
    assert set(table.loc[table["status"] == "panic", "allocator"]) == {"bump"}
    assert table.loc[table["status"] == "panic", "error"].str.contains("allocation error").all()
    assert table.loc[table["status"] == "ok", "tlb_hits"].gt(0).all()
    assert "status: 2 ok, 2 panic" in out and "Pareto front" in out
    assert {"curves-reference.png", "heatmap-reference.png"} <= {p.name for p in tmp_path.iterdir()}
    # a rerun retries only simulator and tool errors: a panic is a result
    assert sweep.run_sweep(_grid(*grid), tmp_path,
                           retry_errors=True, progress=False, log=lambda _: None).ran == 0


# -- the build cache across processes --------------------------------------------------------------------------

_BUILDER = """
import json, os, sys, time
from pathlib import Path
from cosim.toolchain import build

log = Path(sys.argv[2])

def make(directory):
    with open(log, "a") as f:
        f.write(f"start {os.getpid()}\\n")
    with open(directory / "libfake.so", "wb") as f:
        f.write(b"half")
        f.flush()
        time.sleep(0.6)  # a reader now would see a half-built library
        f.write(b" and the rest")
    with open(log, "a") as f:
        f.write(f"end {os.getpid()}\\n")

directory = build.cached("fake", "cfg", ["same inputs"], "libfake.so", make, build_root=Path(sys.argv[1]))
print(json.dumps([str(directory), (directory / "libfake.so").read_bytes().decode()]))
"""


def test_two_processes_building_one_configuration_build_it_once_and_both_get_it_whole(tmp_path):
    log = tmp_path / "makes.log"
    command = [sys.executable, "-c", _BUILDER, str(tmp_path / "build"), str(log)]
    builders = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in builders]
    assert all(p.returncode == 0 for p in builders)
    assert results[0] == results[1] and results[0][1] == "half and the rest"
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["start", "end"]  # one make, finished
    # a builder killed before its marker leaves a directory that is built again, not used
    directory = Path(results[0][0])
    (directory / "mmucosim.built").unlink()
    (directory / "libfake.so").write_bytes(b"half")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout)[1] == "half and the rest"
    assert len(log.read_text().splitlines()) == 4


# -- a real cluster over TCP -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def tcp_cluster(tmp_path: Path, workers: int = 2) -> Iterator[str]:
    """`dask scheduler` and `workers` x `dask worker`, each its own process (group), on 127.0.0.1."""
    from distributed import Client

    dask = str(Path(sys.executable).with_name("dask"))
    address = f"tcp://127.0.0.1:{_free_port()}"
    port = address.rsplit(":", 1)[1]
    processes: list[subprocess.Popen[bytes]] = []
    logs = tmp_path / "dask-logs"
    logs.mkdir()

    def start(name: str, *argv: str) -> None:
        with open(logs / f"{name}.log", "wb") as log:
            processes.append(subprocess.Popen([dask, *argv], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))

    try:
        start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard")
        for index in range(workers):
            start(f"worker{index}", "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                  "--host", "127.0.0.1", "--name", f"w{index}")
        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address, timeout="5s") as client:
                    client.wait_for_workers(workers, timeout=max(1, deadline - time.monotonic()))
                break
            except (OSError, TimeoutError):
                if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                    text = "\n".join(f.read_text()[-2000:] for f in sorted(logs.iterdir()))
                    raise RuntimeError(f"the Dask cluster did not come up:\n{text}") from None
                time.sleep(0.5)
        yield address
    finally:
        for process in reversed(processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)  # the process group this test started: worker and nanny
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)


def test_a_sweep_on_a_tcp_cluster_gives_the_rows_of_the_local_cluster(tmp_path, capsys):
    with tcp_cluster(tmp_path) as address:
        assert cli_main(["sweep", *SMALL, "--out", str(tmp_path / "tcp"), "--scheduler", address,
                         "--no-plots"]) == 0
    assert cli_main(["sweep", *SMALL, "--out", str(tmp_path / "local"), "--workers", "2", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert out.count("12 points to run on 2 workers") == 2
    tcp, local = (pd.read_parquet(tmp_path / name / "sweep.parquet") for name in ("tcp", "local"))
    assert len(tcp) == 12
    for _, row in tcp.iterrows():  # every row finished, counted and rated
        assert row["status"] == "ok" and pd.isna(row["error"])
        assert row["mem_ops"] == row["loads"] + row["stores"] > 0
        assert row["hit_rate"] == pytest.approx(row["tlb_hits"] / (row["tlb_hits"] + row["tlb_misses"]))
        assert row["tlb_misses"] > 0 and row["walks"] > 0 and row["wall_s"] > 0
        assert (row["pwc_hits"] > 0) == (row["pwc_entries"] > 0)
        assert row["tlb_policy"] == TlbPolicy.PLRU.name.lower() and row["backend"] == "reference"
    assert set(tcp["worker"].str.rsplit(":", n=1).str[0]) == {socket.gethostname()}
    measured = list(sweep.MEASURED_COLUMNS)
    pd.testing.assert_frame_equal(tcp.drop(columns=measured), local.drop(columns=measured))


def test_the_bench_section_checks_the_speedup_and_the_overhead():
    from cosim.bench import sweep_checks

    run = {"elapsed_s": 20.0, "min_point_wall_s": 1.2, "overhead_per_point_s": 0.05, "efficiency": 0.99}
    scaling = {"runs": [run, {"elapsed_s": 12.5, "efficiency": 0.94}], "speedup": 1.6, "target_speedup": 1.7,
               "overhead": 0.03, "target_overhead": 0.10, "cpus": 2, "point_slowdown_with_2": 1.25,
               "projected_speedup_free_cores": 1.9}
    speedup, projected, overhead = sweep_checks(scaling)
    assert projected.measured == "1.90x (2 x workers busy 94% / 99%)"
    assert speedup.status == "MISS"
    assert speedup.measured == "1.60x (20.0 s -> 12.5 s, 2 CPUs; each point 1.25x as long with 2)"
    assert (overhead.status, overhead.measured) == ("PASS", "3.0% (50 ms per point)")


def test_every_option_of_the_shared_groups_is_a_dimension_with_their_checks(monkeypatch):
    """An option added to a group of cosim.options becomes a dimension without a line in the sweep; the
    allocator is one, taking a comma list checked against the option's choices."""
    import argparse

    from cosim import options
    from firmware.allocator import ALLOCATORS

    dim = sweep.dimension("allocator")
    assert (dim.kind, dim.flag) == ("knob", "--allocator")
    assert parse_values(dim, "bump,lla") == ("bump", "lla")
    with pytest.raises(sweep.SweepError, match="not one of"):
        parse_values(dim, "slab")
    assert parse_values(dim, ",".join(ALLOCATORS)) == tuple(ALLOCATORS)

    def workload_options() -> argparse.ArgumentParser:
        parent = argparse.ArgumentParser(add_help=False)
        parent.add_argument("--depth", type=int, help="a knob a future workload takes")
        return parent

    monkeypatch.setattr(sweep, "DIMENSION_GROUPS", (("knob", workload_options), *sweep.DIMENSION_GROUPS))
    sweep.dimensions.cache_clear()
    try:
        assert (sweep.dimension("depth").kind, parse_values(sweep.dimension("depth"), "1-3")) == ("knob", (1, 2, 3))
    finally:
        monkeypatch.undo()
        sweep.dimensions.cache_clear()
    assert options.allocator_option in {make for _, make in sweep.DIMENSION_GROUPS}


def read_past_ram(cpu) -> int:
    """A program that faults: paging is off after reset, so this is a physical read beyond the 1 MiB of RAM."""
    return cpu.load_u64(1 << 30)


def test_a_point_whose_kernel_faults_is_a_fault_row():
    from cosim.workloads import Job

    point = sweep.Point("read_past_ram", {}, "reference", MmuConfig(), Job("read_past_ram", "read_past_ram",
                                                                           f"{__name__}:read_past_ram"),
                        sweep.code_version())
    row = sweep.run_point(point)
    assert (row["status"], row["error"]) == ("fault", "BusError: BusError at 0x40000000: physical address outside RAM")
    assert row["mem_ops"] is None and row["point_s"] > 0
