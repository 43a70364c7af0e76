"""Where a run writes, and how: a folder of its own, output paths checked before the simulation starts, and files
that are whole or absent.

A run's default folder is named after everything that makes it differ from another run — workload, backend and
MMU configuration (`build/run/demo-verilator-e16w16plru_p8_m1M_l1_pa40/`) — and is claimed with a lock for as long
as the run lasts: a second run of the same kind at the same time writes to `…-2/` instead of mixing its files into
the first one's. Every file a user names (`--out`, `--waves`) is checked up front: its folder can be made and
written, and it is none of the run's inputs; a problem is an `UnusablePath`, before any time is spent.

Each output is written under a temporary name in its own folder and renamed when complete, so a run that fails,
fills the disk or is interrupted leaves no file that looks finished. A run's folder carries an INCOMPLETE marker
from the start of the run until every output is in place; a run that fails leaves the marker with the reason. An
I/O error becomes an `OutputError` that names the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

INCOMPLETE = "INCOMPLETE"  # the marker file of a run folder whose run has not finished
BUILD = Path("build")
MAX_SUFFIX = 100  # runs of one kind at the same time before giving up


class OutputError(Exception):
    """An output file could not be written; the message names it."""


class UnusablePath(OutputError):
    """An output path refused before the run: not writable, in use by another run, or one of the run's inputs."""


def output_error(path: Path, err: BaseException) -> OutputError:
    """`err`, raised while writing `path`, as one line naming the file."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err) or type(err).__name__
    detail = re.search(r"\[errno \d+\] ([^\n]*)", reason)  # pyarrow's "Error writing bytes ... [errno 27] ..."
    return OutputError(f"cannot write {path}: {detail[1] if detail else reason.splitlines()[0]}")


def partial_path(path: Path) -> Path:
    """Where `path` is written until it is complete: a hidden name beside it, unique to this process."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


@contextlib.contextmanager
def guarded(path: Path) -> Iterator[None]:
    """Turn an OSError raised inside into an OutputError naming `path`."""
    try:
        yield
    except OSError as err:
        raise output_error(path, err) from err


class AtomicFile:
    """A file written at `partial_path(path)` and renamed to `path` by `commit()`; `discard()` removes it.

    Used as a context manager, it commits when the block ends normally and discards on any exception (Ctrl-C too).
    """

    def __init__(self, path: Path, mode: str = "w", **open_args: Any) -> None:
        self.path = path
        self.partial = partial_path(path)
        with guarded(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file: IO[Any] = open(self.partial, mode, **open_args)  # noqa: SIM115 - closed by commit/discard

    def commit(self) -> Path:
        with guarded(self.path):
            try:
                self.file.flush()
                os.fsync(self.file.fileno())
                self.file.close()
                os.replace(self.partial, self.path)
            except BaseException:
                self.discard()
                raise
        return self.path

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        remove_quietly(self.partial)

    def __enter__(self) -> IO[Any]:
        return self.file

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.commit()
            return
        self.discard()
        if isinstance(exc, OSError):
            raise output_error(self.path, exc) from exc


def write_text(path: Path, text: str) -> Path:
    """`path.write_text(text)`, all or nothing."""
    with AtomicFile(path) as out:
        out.write(text)
    return path


def write_lines(path: Path, lines: Iterable[str]) -> Path:
    """Each of `lines` (with its own line end) into `path`, all or nothing."""
    with AtomicFile(path) as out:
        for line in lines:
            out.write(line)
    return path


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def default_run_dir(slug: str, backend: str, config_tag: str, command: str = "run") -> Path:
    """build/<command>/<workload slug>-<backend>-<configuration tag>/ (`cosim.toolchain.export.config_tag`)."""
    return BUILD / command / f"{slug}-{backend}-{config_tag}"


class RunFolder:
    """The folder of one run's outputs: claimed (`claim`) for as long as the run lasts, and marked INCOMPLETE
    while it runs.

    `begin(outputs)` marks the folder incomplete and removes the outputs a previous run left under the names this
    run writes (they would otherwise sit beside a failed run's marker as if they were its own); `finish()` removes
    the marker once every output is in place; `fail(reason)` leaves it, saying why the run did not finish;
    `release()` lets another run have the folder.
    """

    def __init__(self, path: Path, lock: IO[str] | None = None) -> None:
        self.path = path
        self.marker = path / INCOMPLETE
        self._lock = lock

    def begin(self, outputs: Iterable[str]) -> None:
        with guarded(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        write_text(self.marker, f"this run has not finished: started {started}, process {os.getpid()}\n")
        for name in outputs:
            with guarded(self.path / name):
                remove_quietly(self.path / name)

    def fail(self, reason: str) -> None:
        """Say why the run did not finish (best effort: the disk may be why)."""
        with contextlib.suppress(OSError, OutputError):
            write_text(self.marker, f"this run did not finish: {reason}\n")

    def finish(self) -> None:
        with guarded(self.marker):
            remove_quietly(self.marker)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the flock
            self._lock = None


def claim(path: Path, *, explicit: bool) -> RunFolder:
    """Make `path` and lock it for this run. If another run holds it, an `explicit` folder (the user's `--out`) is
    an UnusablePath; a default one gives way to `path-2`, `path-3`, …"""
    for attempt in range(1, MAX_SUFFIX + 1):
        candidate = path if attempt == 1 else path.with_name(f"{path.name}-{attempt}")
        lock = _try_lock(candidate)
        if lock is not None:
            return RunFolder(candidate, lock)
        if explicit:
            raise UnusablePath(f"{candidate} is in use by another run that is still going; choose another --out")
    raise UnusablePath(f"{path} and {MAX_SUFFIX - 1} numbered folders beside it are all in use by other runs")


def _try_lock(folder: Path) -> IO[str] | None:
    if folder.exists() and not folder.is_dir():
        raise UnusablePath(f"{folder} is a file, not a folder for the run's outputs")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # beside the folder, not in it: the folder holds the run's outputs and nothing else
        lock = open(folder.with_name(f".{folder.name}.lock"), "w")  # noqa: SIM115 - held for the run's duration
    except OSError as err:
        raise UnusablePath(f"cannot write to {folder}: {err.strerror}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def check_output_file(path: Path, *, inputs: Sequence[Path] = ()) -> None:
    """Fail now rather than after the simulation: `path` is not one of `inputs`, not a directory, and its folder
    exists or can be made and can be written in."""
    resolved = path.resolve()
    for source in inputs:
        if resolved == source.resolve():
            raise UnusablePath(f"{path} is an input of this run: writing it would destroy it")
    if path.is_dir():
        raise UnusablePath(f"{path} is a directory, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UnusablePath(f"cannot create the folder of {path}: {err.strerror}") from None
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as err:
        raise UnusablePath(f"cannot write {path}: {err.strerror}") from None
    if not existed:
        os.unlink(path)  # the run writes it; an empty file must not pass for its output meanwhile
