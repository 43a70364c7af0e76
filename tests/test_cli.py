"""The `mmucosim` command line: help everywhere, clean errors with exit code 2, and a real run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from cosim.analysis.trace import read_trace
from cosim.cli import build_parser
from cosim.options import config_from
from cosim.workloads import WORKLOADS, Workload
from firmware.allocator import KernelPanic
from firmware.boot import boot
from firmware.cpu import Cpu
from hdl.protocol import Fault

SUBCOMMANDS = ("demo", "run", "replay", "check", "verilog", "synth")




def test_console_script_prints_help():
    script = Path(sys.executable).with_name("mmucosim")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    for command in (*SUBCOMMANDS, "bench"):
        assert command in done.stdout


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(capsys, command):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0 and out.startswith(f"usage: mmucosim {command}")


def test_run_help_lists_the_workloads(capsys):
    _, out, _ = run_cli(capsys, "run", "--help")
    for workload in ("demo-dummy", "many_boxes_long_lived", "random", "replay:FILE"):
        assert workload in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run"], "the following arguments are required: WORKLOAD"),
        (["run", "no_such_workload"], "unknown workload 'no_such_workload'"),
        (["run", "demo", "--n", "5"], "workload 'demo' takes no --n"),
        (["run", "many_boxes", "--n", "0"], "--n must be at least 1"),
        (["run", "demo", "--tlb-entries", "12"], "tlb_entries must be a power of two, got 12"),
        (["run", "demo", "--tlb-policy", "lru"], "invalid choice: 'lru'"),
        (["run", "demo", "--mem-bytes", "lots"], "not a size: 'lots'"),
        (["run", "demo", "--maxphyaddr", "53"], "maxphyaddr must be 32..52, got 53"),
        (["verilog", "--maxphyaddr", "31"], "maxphyaddr must be 32..52, got 31"),
        (["run", "demo", "--backend", "qemu"], "invalid choice: 'qemu'"),
        (["run", "demo", "--waves"], "reference simulates no signals"),
        (["run", "replay:/no/such/script.txt"], "cannot read replay script '/no/such/script.txt'"),
        (["check", "demo", "--backends", "reference"], "give at least two different backends"),
        (["check", "demo", "--backends", "reference,bochs"], "unknown backend 'bochs'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_code_2(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err + out


@pytest.mark.parametrize("command", ["demo", "run", "replay", "check", "compare-allocators", "verilog", "synth"])
def test_every_command_that_builds_the_mmu_takes_maxphyaddr(command):
    extra = {"run": ["demo"], "replay": ["script.txt"], "check": ["demo"], "compare-allocators": ["random"]}
    args = build_parser().parse_args([command, *extra.get(command, []), "--maxphyaddr", "36"])
    assert config_from(args, simulated=False).maxphyaddr == 36


def test_maxphyaddr_reaches_the_hardware(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "run", "demo", "--maxphyaddr", "36", "--no-plots", "--out", str(tmp_path))
    assert code == 0, out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["maxphyaddr"] == 36


def test_sizes_accept_binary_suffixes():
    args = build_parser().parse_args(["run", "demo", "--mem-bytes", "2M"])
    assert args.mem_bytes == 2 << 20
    assert build_parser().parse_args(["run", "demo", "--mem-bytes", "64KiB"]).mem_bytes == 64 << 10


def test_run_simple_allocation_on_the_reference_writes_trace_summary_and_plots(capsys, tmp_path):
    out_dir = tmp_path / "run"
    code, out, _ = run_cli(capsys, "run", "simple_allocation", "--backend", "reference", "--out", str(out_dir))
    assert code == 0
    assert "TLB by phase" in out and "TLB by firmware operation" in out
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "heap_map.png", "summary.json", "tlb_hit_rate.png", "trace.parquet", "walk_latency.png"]
    rows = read_trace(out_dir / "trace.parquet")
    assert [row.event.seq for row in rows] == list(range(len(rows)))
    allocations = {row.path for row in rows if row.label == "alloc(4, 4)"}  # the seed boxes two i32s
    assert allocations and all(path.startswith("simple_allocation/") for path in allocations)
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["workload"] == "simple_allocation" and summary["backend"] == "reference"
    assert summary["total"]["operations"] == len(rows)
    assert sum(phase["operations"] for phase in summary["phases"]) == len(rows)
    for plot in ("tlb_hit_rate.png", "walk_latency.png", "heap_map.png"):
        assert (out_dir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_prints_the_seed_lines_the_tables_and_where_the_files_are(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "demo", "--backend", "reference", "--no-plots", "--out", str(tmp_path))
    assert code == 0
    seed_lines = ["heap_value at 0x444444440000", "current reference count is 2", "reference count is 1 now",
                  "It did not crash!"]
    assert all(f"  {line}\n" in out for line in seed_lines)
    assert out.count("heap_value at") == 1  # the kernel's own println! is not echoed twice
    assert "TLB by phase" in out and "How to read the tables" in out
    assert f"Files in {tmp_path}/" in out and "trace.parquet" in out


def test_replay_writes_what_each_operation_returned(capsys, tmp_path):
    script = tmp_path / "script.txt"
    code, _, _ = run_cli(capsys, "run", "random", "--seed", "5", "--ops", "40", "--no-plots", "--out", str(tmp_path))
    assert code == 0
    results = tmp_path / "results.jsonl"
    code, out, _ = run_cli(capsys, "replay", str(script), "--no-plots", "--out", str(results))
    records = [json.loads(line) for line in results.read_text().splitlines()]
    allocations = [line for line in script.read_text().splitlines() if '"dealloc"' not in line]
    assert len(records) == len(allocations) > 0  # one result per alloc and realloc
    assert code == 0 and f"{len(records)} allocations replayed" in out


def test_a_malformed_replay_script_is_a_clean_error(capsys, tmp_path):
    script = tmp_path / "bad.txt"
    script.write_text('{"op":"alloc","id":1,"size":8,"align":8}\n{"op":"free","id":1}\n')
    code, _, err = run_cli(capsys, "replay", str(script))
    assert code == 2 and "bad replay script" in err and "line 2" in err


def panicking_kernel(cpu: Cpu) -> None:
    boot(cpu)
    raise KernelPanic("out of cheese")


def faulting_kernel(cpu: Cpu) -> int:
    boot(cpu)
    with cpu.context("touch unmapped"):
        return cpu.load_u64(0x7777_0000_0000)


@pytest.fixture
def kernels(monkeypatch):
    for name in ("panicking_kernel", "faulting_kernel"):
        monkeypatch.setitem(WORKLOADS, name, Workload(name, f"test_cli:{name}", "a broken kernel"))


def test_a_kernel_panic_is_reported_without_a_traceback(capsys, kernels, tmp_path):
    code, out, err = run_cli(capsys, "run", "panicking_kernel", "--out", str(tmp_path))
    assert code == 1
    assert "the kernel stopped: KernelPanic: out of cheese" in err and "Traceback" not in err + out


def test_a_page_fault_is_a_result_with_its_trace(capsys, kernels, tmp_path):
    code, out, _ = run_cli(capsys, "run", "faulting_kernel", "--no-plots", "--trace-format", "csv", "--out",
                        str(tmp_path))
    assert code == 1
    assert "The kernel faulted: PageFault at 0x777700000000" in out
    last = read_trace(tmp_path / "trace.csv")[-1]
    assert last.path == "touch unmapped" and last.event.fault == Fault.PAGE
