"""Input a hostile or careless user gives: every case is one clear line and a non-zero exit, never a traceback, and
nothing is lost (no input overwritten, no output mixed with another run's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosim import outputs
from cosim.cli import main
from cosim.toolchain.export import config_tag
from cosim.workloads import WorkloadError, read_script
from firmware.allocator import KernelPanic
from firmware.boot import MIN_RAM_BYTES
from hdl.protocol import MmuConfig

ALLOC = '{"op":"alloc","id":1,"size":8,"align":8}'


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """(exit status, the last line on stderr) of `mmucosim ARGV`."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return int(exited.value.code or 0), err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe" + ALLOC.encode(), "line 1: not UTF-8 text"),
        (ALLOC.encode() + b"\n\n" + b"caf\xe9\n", "line 3: not UTF-8 text"),
        (b"\n\n\n" + b'{"op":"alloc","id":1,"size":0,"align":8}', "line 4: size must be at least 1"),
        (b"\n" + ALLOC.encode() + b"\n\n" + b'{"op":"free","id":1}', "line 4: unknown op 'free'"),
        (b'{"op":"alloc","id":1,"size":' + b"9" * 5000 + b',"align":8}', "line 1: longer than 4096 characters"),
    ],
    ids=["not-utf8", "not-utf8-later", "size-zero-after-blank-lines", "error-after-blank-lines", "huge-number"],
)
def test_a_bad_replay_script_names_its_own_line(tmp_path, capsys, content: bytes, message: str) -> None:
    script = tmp_path / "script.txt"
    script.write_bytes(content)
    status, line = run_cli(["replay", str(script), "--out", str(tmp_path / "out.jsonl")], capsys)
    assert status == 2
    assert message in line


def test_a_number_python_will_not_convert_is_a_replay_error() -> None:
    from firmware.replay import ReplayError, parse

    digits = "9" * 4400  # past CPython's 4300-digit limit for int(str), within the line length
    with pytest.raises(ReplayError, match="line 2: not a usable number"):
        parse(["", f'{{"op":"alloc","id":1,"size":{digits},"align":8}}'])


def test_a_byte_order_mark_is_accepted(tmp_path) -> None:
    script = tmp_path / "bom.txt"
    script.write_bytes(b"\xef\xbb\xbf" + ALLOC.encode() + b"\r\n")
    assert read_script(script) == (ALLOC,)


@pytest.mark.parametrize("kind", ["directory", "device", "missing"])
def test_a_replay_script_that_is_no_file_is_refused(tmp_path, kind: str) -> None:
    path = {"directory": tmp_path, "device": Path("/dev/zero"), "missing": tmp_path / "nope.txt"}[kind]
    with pytest.raises(WorkloadError, match=str(path)):
        read_script(path)


def test_replay_refuses_to_write_its_results_over_its_script(tmp_path, capsys) -> None:
    script = tmp_path / "script.txt"
    script.write_text(ALLOC + "\n")
    status, line = run_cli(["replay", str(script), "--out", str(script)], capsys)
    assert (status, script.read_text()) == (2, ALLOC + "\n")
    assert "is an input of this run" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--mem-bytes", "128K"], f"needs at least {MIN_RAM_BYTES >> 10} KiB"),
        (["--mem-bytes", "64G"], "more than the backends simulate"),
        (["--mem-bytes", "4G", "--backend", "verilator"], "more than the backends simulate"),
        (["--tlb-entries", "1048576"], "more than the backends simulate"),
        (["--mem-bytes", "9" * 5000], "not a size"),
        (["--backend", "verilator", "--waves", "run.txt"], "writes waves as *.vcd or *.fst"),
        (["--backend", "myhdl", "--waves", "run.fst"], "writes waves as *.vcd, not run.fst"),
    ],
)
def test_a_setting_the_run_cannot_use_is_refused_before_it_starts(capsys, argv: list[str], message: str) -> None:
    status, line = run_cli(["run", "demo", *argv], capsys)
    assert status == 2
    assert message in line


def test_the_smallest_ram_the_options_allow_boots_the_kernel_and_half_of_it_does_not() -> None:
    from cosim.runner import run_program

    ok = run_program("firmware.kernel:demo", "reference", MmuConfig(mem_bytes=MIN_RAM_BYTES))
    assert ok.value[-1] == "It did not crash!"
    with pytest.raises(KernelPanic, match="FrameAllocationFailed"):
        run_program("firmware.kernel:demo", "reference", MmuConfig(mem_bytes=MIN_RAM_BYTES // 2))


@pytest.mark.parametrize("where", ["no-such-parent-of-a-file", "a-directory"])
def test_an_unwritable_waves_file_is_refused_before_the_simulator_is_built(tmp_path, capsys, where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder would have to be")
    waves = blocker / "run.vcd" if where == "no-such-parent-of-a-file" else tmp_path
    if where == "a-directory":
        waves = tmp_path / "dir.vcd"
        waves.mkdir()
    status, line = run_cli(["run", "demo", "--backend", "verilator", "--waves", str(waves),
                            "--out", str(tmp_path / "out")], capsys)
    assert status == 2
    assert str(waves) in line


def test_runs_of_different_configurations_get_different_folders() -> None:
    small, large = MmuConfig(tlb_entries=8), MmuConfig(tlb_entries=32)
    assert (outputs.default_run_dir("demo", "verilator", config_tag(small))
            != outputs.default_run_dir("demo", "verilator", config_tag(large)))


def test_a_folder_in_use_by_another_run_is_not_shared(tmp_path) -> None:
    first = outputs.claim(tmp_path / "demo", explicit=False)
    second = outputs.claim(tmp_path / "demo", explicit=False)
    try:
        assert (first.path.name, second.path.name) == ("demo", "demo-2")
        with pytest.raises(outputs.OutputError, match="in use by another run"):
            outputs.claim(tmp_path / "demo", explicit=True)
    finally:
        first.release()
        second.release()
    again = outputs.claim(tmp_path / "demo", explicit=True)  # free again once the first run ended
    assert again.path == tmp_path / "demo"
    again.release()


def test_runs_at_the_same_time_each_write_their_own_folder(tmp_path) -> None:
    """While one run holds its folder, a run of the same configuration and one of another configuration, started
    together, each write a folder of their own, holding exactly their own run's files."""
    import json
    import subprocess
    import sys

    tag4 = config_tag(MmuConfig(tlb_entries=4))
    held = outputs.claim(tmp_path / outputs.default_run_dir("many_boxes-n3000", "reference", tag4),
                         explicit=False)  # a run still going
    script = Path(sys.executable).with_name("mmucosim")
    runs = [subprocess.Popen([str(script), "run", "many_boxes", "--n", "3000", "--no-plots", "--tlb-entries",
                              str(entries)], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for entries in (4, 32)]
    try:
        for run in runs:
            _, err = run.communicate(timeout=300)
            assert run.returncode == 0, err
    finally:
        held.release()
    written = {folder.name: json.loads((folder / "summary.json").read_text())["config"]["tlb_entries"]
               for folder in (tmp_path / "build" / "run").iterdir() if (folder / "summary.json").exists()}
    tag4, tag32 = (config_tag(MmuConfig(tlb_entries=entries)) for entries in (4, 32))
    assert written == {f"many_boxes-n3000-reference-{tag4}-2": 4, f"many_boxes-n3000-reference-{tag32}": 32}


def test_fst_waves_without_the_lz4_headers_are_refused_before_any_build(monkeypatch) -> None:
    import cosim.backends
    from cosim.backends import BackendError, check_waves

    monkeypatch.setattr(cosim.backends, "_lz4_headers", lambda: False)
    for backend in ("verilator", "cocotb-verilator"):
        with pytest.raises(BackendError, match=r"liblz4-dev.*run\.vcd"):
            check_waves(backend, Path("run.fst"))
    check_waves("cocotb-icarus", Path("run.fst"))  # Icarus writes FST itself
    monkeypatch.setattr(cosim.backends, "_lz4_headers", lambda: True)
    check_waves("verilator", Path("run.fst"))
