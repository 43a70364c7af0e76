"""Output files that are whole or absent: each is written under a temporary name in its own folder and renamed
when complete, so a run that fails, fills the disk or is interrupted leaves no file that looks finished. A run's
folder carries an INCOMPLETE marker from the start of the run until every output is in place; a run that fails
leaves the marker with the reason. An I/O error becomes an `OutputError` that names the file.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

INCOMPLETE = "INCOMPLETE"  # the marker file of a run folder whose run has not finished


class OutputError(Exception):
    """An output file could not be written; the message names it."""


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


class RunFolder:
    """The folder of one run's outputs and its INCOMPLETE marker.

    `begin()` marks the folder incomplete and removes the outputs a previous run left under the names this run
    writes (they would otherwise sit beside a failed run's marker as if they were its own); `finish()` removes the
    marker once every output is in place; `fail(reason)` leaves it, saying why the run did not finish.
    """

    def __init__(self, path: Path, outputs: Iterable[str]) -> None:
        self.path = path
        self.outputs = tuple(outputs)
        self.marker = path / INCOMPLETE

    def begin(self) -> None:
        with guarded(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        write_text(self.marker, f"this run has not finished: started {started}, process {os.getpid()}\n")
        for name in self.outputs:
            with guarded(self.path / name):
                remove_quietly(self.path / name)

    def fail(self, reason: str) -> None:
        """Say why the run did not finish (best effort: the disk may be why)."""
        with contextlib.suppress(OSError, OutputError):
            write_text(self.marker, f"this run did not finish: {reason}\n")

    def finish(self) -> None:
        with guarded(self.marker):
            remove_quietly(self.marker)
