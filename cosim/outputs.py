"""Where a run writes, decided and checked before the simulation starts.

A run's default folder is named after everything that makes it differ from another run — workload, backend and
MMU configuration (`build/run/demo-verilator-e16w16plru_p8_m1M_l1_pa40/`) — and is claimed with a lock for as long
as the run lasts: a second run of the same kind at the same time writes to `…-2/` instead of mixing its files into
the first one's. Every file a user names (`--out`, `--waves`) is checked up front: its folder can be made and
written, and it is none of the run's inputs. A problem is an OutputError naming the path, before any time is spent.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from cosim.toolchain.export import config_tag
from hdl.protocol import MmuConfig

BUILD = Path("build")
LOCK_NAME = ".mmucosim.lock"
MAX_SUFFIX = 100  # runs of one kind at the same time before giving up


class OutputError(Exception):
    """An output path cannot be used; the message names it and says why."""


def default_run_dir(slug: str, backend: str, config: MmuConfig, command: str = "run") -> Path:
    """build/<command>/<workload slug>-<backend>-<configuration tag>/."""
    return BUILD / command / f"{slug}-{backend}-{config_tag(config)}"


class RunFolder:
    """A folder claimed by one run: its lock is held until `release` (or the process ends)."""

    def __init__(self, path: Path, lock: IO[str]) -> None:
        self.path = path
        self._lock: IO[str] | None = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the flock
            self._lock = None


def claim(path: Path, *, explicit: bool) -> RunFolder:
    """Make `path` and lock it for this run. If another run holds it, an `explicit` folder (the user's `--out`) is
    an OutputError; a default one gives way to `path-2`, `path-3`, …"""
    for attempt in range(1, MAX_SUFFIX + 1):
        candidate = path if attempt == 1 else path.with_name(f"{path.name}-{attempt}")
        lock = _try_lock(candidate)
        if lock is not None:
            return RunFolder(candidate, lock)
        if explicit:
            raise OutputError(f"{candidate} is in use by another run that is still going; choose another --out")
    raise OutputError(f"{path} and {MAX_SUFFIX - 1} numbered folders beside it are all in use by other runs")


def _try_lock(folder: Path) -> IO[str] | None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / LOCK_NAME, "w")  # noqa: SIM115 - held open for the run's duration
    except OSError as err:
        raise OutputError(f"cannot write to {folder}: {err.strerror}") from None
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
            raise OutputError(f"{path} is an input of this run: writing it would destroy it")
    if path.is_dir():
        raise OutputError(f"{path} is a directory, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the folder of {path}: {err.strerror}") from None
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror}") from None
    if not existed:
        os.unlink(path)  # the run writes it; an empty file must not pass for its output meanwhile
