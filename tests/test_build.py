"""The build cache (cosim.toolchain.build): one build per content, damaged builds healed, failed ones removed,
old ones pruned, and build processes that end with the run."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cosim.toolchain import build
from hdl.protocol import MmuConfig


class Maker:
    """A `make` for build.cached that writes `artefact` and counts its calls."""

    def __init__(self, text: str = "built") -> None:
        self.calls = 0
        self.text = text

    def __call__(self, directory: Path) -> None:
        self.calls += 1
        (directory / "artefact").write_text(self.text)


def test_a_build_is_made_once_per_content(tmp_path: Path) -> None:
    make = Maker()
    first = build.cached("kind", "tag", ["a"], "artefact", make, tmp_path)
    again = build.cached("kind", "tag", ["a"], "artefact", make, tmp_path)
    other = build.cached("kind", "tag", ["b"], "artefact", make, tmp_path)
    assert first == again != other
    assert make.calls == 2
    assert (first / "artefact").read_text() == "built"


@pytest.mark.parametrize("damage", ["truncate", "delete", "drop_marker"])
def test_a_damaged_build_is_made_again_and_says_so(tmp_path: Path, damage: str, capsys) -> None:
    make = Maker()
    directory = build.cached("kind", "tag", ["a"], "artefact", make, tmp_path)
    capsys.readouterr()  # the first build's line
    if damage == "truncate":
        (directory / "artefact").write_text("bui")
    elif damage == "delete":
        (directory / "artefact").unlink()
    else:
        (directory / build.MARKER).unlink()
    assert build.cached("kind", "tag", ["a"], "artefact", make, tmp_path) == directory
    assert make.calls == 2
    assert (directory / "artefact").read_text() == "built"
    said = capsys.readouterr().err
    if damage == "drop_marker":  # an unfinished build, not a damaged one: built as if new
        assert said == f"mmucosim: building kind tag (once; cached in {directory.parent})\n"
    else:
        assert f"rebuilding {directory.name}" in said


def test_a_failed_build_leaves_no_folder_behind(tmp_path: Path) -> None:
    def fail(directory: Path) -> None:
        (directory / "half").write_text("x")
        raise build.BuildError("the compiler failed")

    with pytest.raises(build.BuildError, match="the compiler failed"):
        build.cached("kind", "tag", ["a"], "artefact", fail, tmp_path)
    assert [p for p in (tmp_path / "kind").iterdir() if p.is_dir()] == []


def test_a_build_that_writes_no_artefact_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(build.BuildError, match="wrote no"):
        build.cached("kind", "tag", ["a"], "artefact", lambda directory: None, tmp_path)


def test_only_the_newest_builds_of_a_tag_are_kept(tmp_path: Path) -> None:
    make = Maker()
    directories = []
    for version in range(build.KEEP_BUILDS + 2):
        directories.append(build.cached("kind", "tag", [str(version)], "artefact", make, tmp_path))
        os.utime(directories[-1] / build.MARKER, (version, version))  # the order they were made in
    build.cached("kind", "other", ["x"], "artefact", make, tmp_path)
    build.cached("kind", "tag", [str(build.KEEP_BUILDS + 1)], "artefact", make, tmp_path)  # prunes again
    kept = sorted(p.name for p in (tmp_path / "kind").iterdir() if p.is_dir() and p.name.startswith("tag-"))
    assert kept == sorted(d.name for d in directories[-build.KEEP_BUILDS:])
    assert (tmp_path / "kind").glob("other-*")


def test_old_failed_run_folders_are_pruned(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for index in range(5):
        (runs / f"run{index}").mkdir(parents=True)
        os.utime(runs / f"run{index}", (index, index))  # long ago, oldest first
    (runs / "running").mkdir()  # just made: another process may still be in it
    build.prune_runs(runs, keep=2, min_age_s=60)
    assert sorted(p.name for p in runs.iterdir()) == ["run4", "running"]
    build.prune_runs(runs, keep=0, min_age_s=60)
    assert [p.name for p in runs.iterdir()] == ["running"]


def test_an_interrupted_tool_takes_its_process_group_with_it(tmp_path: Path) -> None:
    """SIGINT to the Python process alone (not its group, as a terminal's Ctrl-C would send) still ends the tool
    and the tool's own children."""
    pid_file = tmp_path / "grandchild.pid"
    script = textwrap.dedent(f"""
        import signal, sys
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from cosim.toolchain.build import run_in_group
        try:
            run_in_group(["sh", "-c", "sleep 300 & echo $! > {pid_file}; wait"], cwd=".", env=None)
        except KeyboardInterrupt:
            sys.exit(130)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() < deadline, "the tool never started"
            time.sleep(0.05)
        grandchild = int(pid_file.read_text())
        os.kill(child.pid, signal.SIGINT)
        assert child.wait(timeout=30) == 130
        deadline = time.monotonic() + 10
        while _alive(grandchild):
            assert time.monotonic() < deadline, "the tool's child outlived the interrupted run"
            time.sleep(0.05)
    finally:
        if child.poll() is None:
            child.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.rtl
def test_a_truncated_verilated_library_is_rebuilt_and_loads(tmp_path: Path, capsys) -> None:
    from cosim.backends.verilated import build_library

    config = MmuConfig(tlb_entries=4, pwc_entries=0, mem_bytes=1 << 16)
    library = build_library(config, build_root=tmp_path)
    with open(library, "r+b") as handle:
        handle.truncate(library.stat().st_size // 2)  # what a full disk or a killed copy leaves
    assert build_library(config, build_root=tmp_path) == library
    assert "rebuilding" in capsys.readouterr().err
    ctypes.CDLL(str(library))  # loads: without the check this would be a SIGBUS, or a failed dlopen
