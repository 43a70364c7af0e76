"""`--allocator` on the commands that run the kernel, and `mmucosim compare-allocators`.

The addresses expected below follow from the chapter's code by hand (H = HEAP_START = 0x4444_4444_0000):

- `lla` (linked_list_allocator 0.9.1) rounds every block up to its 16-byte minimum hole: the seed's two
  `Box::new(i32)` land at H and H + 0x10, and `kernel_main`'s Vec, grown 4 → 8 → … → 512 `i32`s by the default
  realloc, ends at H + 0x800 (each freed buffer merges back below the next one).
- `bump` takes exactly `layout.size` bytes at `align_up(next, align)`: the two boxes at H and H + 4. In
  `kernel_main` the Box keeps `allocations` above 0, so `next` never resets: the Vec's buffers of 16, 32, …, 1024
  bytes follow the Box's 4 bytes (4 + 16 + 32 + … + 1024 = 2036 = 0x7f4), and the 2048-byte one is at H + 0x7f4.
"""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from cosim.analysis.plots import pyplot
from cosim.backends import BackendError
from cosim.toolchain.export import config_tag
from cosim.workloads import WORKLOADS, Workload, resolve
from firmware.allocator import ALLOCATORS, DEFAULT_ALLOCATOR
from firmware.collections import U8, Box, Vec
from firmware.cpu import Cpu
from firmware.kernel import init_kernel_heap, start
from hdl.protocol import MmuConfig

H = 0x4444_4444_0000




# -- --allocator ---------------------------------------------------------------------------------------------


def test_the_allocator_changes_where_kernel_main_puts_its_vec(capsys, tmp_path):
    code, lla, _ = run_cli(capsys, "run", "demo", "--no-plots", "--out", str(tmp_path / "lla"))
    assert code == 0
    assert f"heap_value at {H:#x}\n" in lla and f"vec at {H + 0x800:#x}\n" in lla
    code, bump, _ = run_cli(capsys, "run", "demo", "--allocator", "bump", "--no-plots", "--out", str(tmp_path / "b"))
    assert code == 0
    assert f"heap_value at {H:#x}\n" in bump and f"vec at {H + 0x7F4:#x}\n" in bump
    assert "on reference with the bump allocator;" in bump and "allocator;" not in lla


@pytest.mark.parametrize(("allocator", "second_box"), [
    ("lla", H + 0x10), ("bump", H + 4), ("linked-list", H + 0x10), ("fixed-size-block", H + 0x10),
])
def test_simple_allocation_places_the_second_box_as_each_design_does(capsys, tmp_path, allocator, second_box):
    """The chapter's list rounds a 4-byte request up to a 16-byte ListNode; the fixed-size allocator's 8-byte
    block comes from its fallback, the crate, which takes 16."""
    code, out, _ = run_cli(capsys, "run", "simple_allocation", "--allocator", allocator, "--no-plots",
                        "--out", str(tmp_path))
    assert code == 0
    assert f"'boxes': ['{H:#x}', '{second_box:#x}']" in out


def test_output_directories_and_summaries_name_the_allocator(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for allocator in (None, "bump"):
        option = [] if allocator is None else ["--allocator", allocator]
        code, _, _ = run_cli(capsys, "run", "many_boxes", "--n", "5", *option)
        assert code == 0
    tag = config_tag(MmuConfig())
    default, bump = (tmp_path / "build" / "run" / f"{name}-{tag}" for name in ("many_boxes-n5-reference",
                                                                                "many_boxes-n5-bump-reference"))
    assert json.loads((default / "summary.json").read_text())["allocator"] == "lla"
    assert json.loads((bump / "summary.json").read_text())["allocator"] == "bump"
    assert (bump / "heap_map.png").stat().st_size > 10_000


def test_resolve_puts_the_allocator_in_args_and_slug_and_leaves_the_default_alone():
    assert resolve("many_boxes", n=5) == resolve("many_boxes", n=5, allocator="lla")
    assert resolve("many_boxes", n=5).slug == "many_boxes-n5"
    job = resolve("random", seed=1, ops=10, allocator="fixed-size-block")
    assert (job.slug, job.args["allocator"], job.allocator) == ("random-s1-o10-fixed-size-block",
                                                               "fixed-size-block", "fixed-size-block")
    assert resolve("demo-dummy").allocator is None


@pytest.mark.parametrize("command", ["demo", "run", "replay", "check", "compare-allocators"])
def test_help_lists_the_allocators(capsys, command):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0 and "lla,bump,linked-list,fixed-size-block" in out


def test_bench_takes_the_allocator():
    from cosim.bench import build_parser, plan

    assert build_parser().parse_args(["--allocator", "bump"]).allocator == "bump"
    assert build_parser().parse_args([]).allocator == DEFAULT_ALLOCATOR
    [spec] = plan(["reference"], ["many_boxes"], quick=True, allocator="linked-list")
    assert spec.job().args["allocator"] == "linked-list"


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "demo", "--allocator", "slab"], "invalid choice: 'slab'"),
    (["demo", "--allocator", "slab"], "invalid choice: 'slab'"),
    (["replay", "x.txt", "--allocator", "slab"], "invalid choice: 'slab'"),
    (["check", "demo", "--allocator", "slab"], "invalid choice: 'slab'"),
    (["bench", "--allocator", "slab"], "invalid choice: 'slab'"),
    (["compare-allocators", "demo", "--allocators", "lla,slab"], "unknown allocator 'slab'"),
    (["compare-allocators", "demo", "--allocators", "lla,lla"], "give one or more different allocators"),
    (["run", "demo-dummy", "--allocator", "bump"], "'demo-dummy' runs its own Dummy allocator"),
    (["check", "demo-dummy", "--allocator", "lla"], "'demo-dummy' runs its own Dummy allocator"),
    (["compare-allocators", "demo-dummy"], "'demo-dummy' runs its own Dummy allocator"),
])
def test_a_bad_allocator_is_one_clear_line_and_exit_code_2(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err + out


# -- compare-allocators --------------------------------------------------------------------------------------


def _rows(out: str) -> dict[str, str]:
    """The comparison table's rows by allocator: the lines between its rule and the "largest request" note."""
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("─")) + 1
    last = next(i for i, line in enumerate(lines) if line.startswith("largest request"))
    return {line.split()[0]: line for line in lines[first:last]}


def test_compare_allocators_prints_every_row_and_writes_its_files(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "compare-allocators", "many_boxes_long_lived", "--n", "40", "--out", str(tmp_path))
    assert code == 0
    progress = out[:out.index("many_boxes_long_lived-n40 on reference\n")]
    assert list(_rows(out)) == list(ALLOCATORS)
    assert all(f"  {name} " in progress for name in ALLOCATORS)  # a line as each run finished
    assert "largest request: Layout { size: 8, align: 8 }" in out
    numbers = json.loads((tmp_path / "comparison.json").read_text())
    assert list(numbers["allocators"]) == list(ALLOCATORS)
    assert numbers["allocators"]["bump"]["per_alloc"]["memory_ops"] == 8.0
    assert numbers["config"]["tlb_entries"] == 16
    assert pyplot().imread(tmp_path / "allocators.png").shape[1] > 1000


def test_compare_allocators_default_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, _ = run_cli(capsys, "compare-allocators", "many_boxes", "--n", "3", "--allocators", "bump")
    assert code == 0
    tag = config_tag(MmuConfig())
    assert (tmp_path / "build" / "compare" / f"many_boxes-n3-reference-{tag}" / "comparison.json").exists()


def test_bumps_expected_failure_is_a_row(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "compare-allocators", "many_boxes_long_lived", "--allocators", "bump",
                        "--out", str(tmp_path))
    assert code == 0
    assert "allocation error at iteration 12799" in _rows(out)["bump"]
    bump = json.loads((tmp_path / "comparison.json").read_text())["allocators"]["bump"]
    assert (bump["result"], bump["allocs"], bump["error"]) == ("allocation error at iteration 12799", 12_801, None)


def big_buffer_twice(cpu: Cpu, allocator: str = DEFAULT_ALLOCATOR) -> str:
    """One small Box lives while a 60 KiB buffer is allocated, freed and allocated again: every design reuses
    the freed buffer except bump, whose `next` cannot reset while the Box lives: its second buffer panics."""
    alloc = init_kernel_heap(cpu, start(cpu), allocator)
    keep = Box.new_in(1, alloc)
    for _ in range(2):
        Vec.with_capacity_in(60 * 1024, alloc, U8).drop()
    keep.drop()
    return "ok"


@pytest.fixture
def big_buffer(monkeypatch):
    name = "big_buffer_twice"
    monkeypatch.setitem(WORKLOADS, name, Workload(name, f"test_cli_allocators:{name}", "bump panics"))
    return name


def test_a_panic_in_one_allocators_run_is_its_row_and_the_others_still_print(capsys, tmp_path, big_buffer):
    code, out, _ = run_cli(capsys, "compare-allocators", big_buffer, "--out", str(tmp_path))
    assert code == 0
    rows = _rows(out)
    assert list(rows) == list(ALLOCATORS)
    assert "allocation error" in rows["bump"]
    assert all(" ok " in rows[name] for name in ALLOCATORS if name != "bump")
    assert "largest request: Layout { size: 61440, align: 1 }" in out


def test_a_run_that_cannot_be_measured_is_a_row_with_its_error(capsys, tmp_path, monkeypatch):
    import cosim.compare

    real = cosim.compare.run_program

    def failing(program, backend, config=None, *, args, **kwargs):
        if args["args"]["allocator"] == "linked-list":
            raise BackendError("the simulator died")
        return real(program, backend, config, args=args, **kwargs)

    monkeypatch.setattr(cosim.compare, "run_program", failing)
    code, out, _ = run_cli(capsys, "compare-allocators", "many_boxes", "--n", "3", "--out", str(tmp_path))
    assert code == 1
    assert "linked-list: not measured: BackendError: the simulator died" in out
    rows = _rows(out)
    assert list(rows) == list(ALLOCATORS)
    assert "not measured" in rows["linked-list"]
    assert all(" ok " in rows[name] for name in ("lla", "bump", "fixed-size-block"))
    assert json.loads((tmp_path / "comparison.json").read_text())["allocators"]["linked-list"]["error"]
