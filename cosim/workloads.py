"""Named workloads: what `mmucosim run NAME` runs, as a firmware program reference and its arguments.

A workload name is what a user types; `resolve` turns it, with the few knobs the command line offers (`--n`,
`--seed`, `--ops`, `--allocator`), into a `Job` that `cosim.runner.run_program` can execute on any backend. Names
are stable so that output directories (`build/run/<slug>-<backend>/`) and lockstep reports can be compared across
runs: a global allocator other than the default `lla` ends the slug (`many_boxes-n2000-bump`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from firmware.allocator import ALLOCATORS, DEFAULT_ALLOCATOR

REPLAY_PREFIX = "replay:"
MAX_SCRIPT_BYTES = 1 << 30  # a replay script is read whole: 1 GiB is tens of millions of operations
MAX_SCRIPT_LINE = 4096  # characters; an operation takes under 100
DEFAULT_RANDOM_OPS = 1000


class WorkloadError(ValueError):
    """A workload name or its options cannot be resolved (unknown name, unreadable replay file)."""


@dataclass(frozen=True)
class Workload:
    """A registry entry: the program to run and which command-line knobs it understands."""

    name: str
    program: str  # "module:function", called as function(cpu, **args)
    description: str
    knobs: tuple[str, ...] = ()  # subset of ("n", "seed", "ops")
    own_allocator: str | None = None  # the allocator the program hard-wires (demo-dummy's Dummy); then no --allocator


@dataclass(frozen=True)
class Job:
    """A workload ready to run: `program(cpu, **args)`; `slug` names its output directory."""

    name: str
    slug: str
    program: str
    args: Mapping[str, Any] = field(default_factory=dict)
    script: tuple[str, ...] = ()  # a generated allocation script (`random`), written out to be replayed
    inputs: tuple[Path, ...] = ()  # files the job reads (a replay script): no output may overwrite them
    allocator: str | None = DEFAULT_ALLOCATOR  # the global allocator (`firmware.allocator.ALLOCATORS`); None: own


_HEAP_TESTS = "firmware.heap_allocation_tests"

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("demo", "firmware.kernel:demo", "the seed's kernel_main: Box, Vec and Rc on the heap"),
        Workload("demo-dummy", "firmware.kernel:demo_dummy", "kernel_main on the Dummy allocator",
                 own_allocator="Dummy"),
        Workload("simple_allocation", f"{_HEAP_TESTS}:simple_allocation", "two Boxes, checked", ("n",)),
        Workload("large_vec", f"{_HEAP_TESTS}:large_vec", "a Vec of n elements and its sum", ("n",)),
        Workload("many_boxes", f"{_HEAP_TESTS}:many_boxes", "n Boxes, each freed at once", ("n",)),
        Workload(
            "many_boxes_long_lived", f"{_HEAP_TESTS}:many_boxes_long_lived",
            "n short-lived Boxes next to one long-lived Box", ("n",),
        ),
        Workload("random", "firmware.replay:replay", "seeded random alloc/free script", ("seed", "ops")),
    )
}


def workload_names() -> list[str]:
    """Every name `resolve` accepts, `replay:FILE` written as such."""
    return [*WORKLOADS, f"{REPLAY_PREFIX}FILE"]


def resolve(
    name: str, *, n: int | None = None, seed: int | None = None, ops: int | None = None,
    allocator: str | None = None,
) -> Job:
    """The job for workload `name`. Knobs left at None take their defaults (`n`: the firmware's own; `allocator`:
    `lla`); a knob the workload does not understand is an error rather than silently ignored. `allocator` goes
    into the job's args and, unless it is the default, into its slug."""
    given = {knob for knob, value in (("n", n), ("seed", seed), ("ops", ops)) if value is not None}
    if allocator is not None and allocator not in ALLOCATORS:
        raise WorkloadError(f"unknown allocator {allocator!r}; choose one of {', '.join(ALLOCATORS)}")
    if name.startswith(REPLAY_PREFIX):
        if given:
            raise WorkloadError(f"a replay workload takes no --{sorted(given)[0]}")
        return _with_allocator(_replay_job(Path(name[len(REPLAY_PREFIX):])), allocator)
    workload = WORKLOADS.get(name)
    if workload is None:
        raise WorkloadError(f"unknown workload {name!r}; choose one of {', '.join(workload_names())}")
    unknown = sorted(given - set(workload.knobs))
    if unknown:
        raise WorkloadError(f"workload {name!r} takes no --{unknown[0]}")
    if workload.own_allocator is not None:
        if allocator is not None:
            raise WorkloadError(f"workload {name!r} runs its own {workload.own_allocator} allocator and takes no "
                                "--allocator")
        return Job(name, name, workload.program, allocator=None)
    for knob, value in (("n", n), ("ops", ops)):
        if value is not None and value < 1:
            raise WorkloadError(f"--{knob} must be at least 1, got {value}")
    if name == "random":
        seed = 0 if seed is None else seed
        ops = DEFAULT_RANDOM_OPS if ops is None else ops
        from firmware.replay import generate

        script = tuple(generate(ops, seed))
        job = Job(name, f"random-s{seed}-o{ops}", workload.program, {"lines": list(script)}, script)
        return _with_allocator(job, allocator)
    args = {} if n is None else {"n": n}
    slug = name if n is None else f"{name}-n{n}"
    return _with_allocator(Job(name, slug, workload.program, args), allocator)


def _with_allocator(job: Job, allocator: str | None) -> Job:
    """`job` on the global allocator `allocator` (None: the default, which leaves the job as it is)."""
    if allocator is None or allocator == DEFAULT_ALLOCATOR:
        return job
    return replace(job, slug=f"{job.slug}-{allocator}", args={**job.args, "allocator": allocator},
                   allocator=allocator)


def read_script(path: Path) -> tuple[str, ...]:
    """The lines of an allocation script, blank ones included (so that errors give the file's own line numbers).

    Only a regular file of UTF-8 text (a BOM is accepted) of at most MAX_SCRIPT_BYTES is read: a directory, a
    device such as /dev/zero, binary data or an endless line is a WorkloadError naming the file, not a hang or a
    traceback.
    """
    import stat

    shown = repr(str(path))
    try:
        with open(path, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise WorkloadError(f"replay script {shown} is not a regular file")
            data = handle.read(MAX_SCRIPT_BYTES + 1)
    except OSError as err:
        raise WorkloadError(f"cannot read replay script {shown}: {err.strerror}") from err
    if len(data) > MAX_SCRIPT_BYTES:
        raise WorkloadError(f"replay script {shown} is larger than {MAX_SCRIPT_BYTES >> 20} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line_no = data[: err.start].count(b"\n") + 1
        raise WorkloadError(f"replay script {shown}, line {line_no}: not UTF-8 text (byte {err.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    for line_no, line in enumerate(lines, 1):
        if len(line) > MAX_SCRIPT_LINE:
            raise WorkloadError(f"replay script {shown}, line {line_no}: longer than {MAX_SCRIPT_LINE} characters")
    return tuple(line.removesuffix("\r") for line in lines)


def _replay_job(path: Path) -> Job:
    if not path.name:
        raise WorkloadError(f"{REPLAY_PREFIX}FILE needs a file name")
    script = read_script(path)
    from firmware.replay import ReplayError, parse

    try:
        parse(script)  # checked here so that a bad line is a clean error before anything runs
    except ReplayError as err:
        raise WorkloadError(f"bad replay script {str(path)!r}: {err}") from None
    slug = "replay-" + re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    return Job(f"{REPLAY_PREFIX}{path}", slug, "firmware.replay:replay", {"lines": list(script)}, inputs=(path,))
