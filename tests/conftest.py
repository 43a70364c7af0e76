"""Shared pytest options: `--run-slow` for the full-size workloads, and visible skips for missing simulators."""

from __future__ import annotations

import shutil

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow (full-size workloads)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="full-size workload: run with --run-slow (make test-full)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`mmucosim ARGV` in this process: (exit status, stdout, stderr)."""
    from cosim.cli import main

    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def require_simulator(backend: str) -> None:
    """Skip, saying why, when the simulator a backend needs is not installed."""
    if backend == "cocotb-icarus" and shutil.which("iverilog") is None:
        pytest.skip("Icarus Verilog (iverilog) is not installed: `make test` installs it when run as root")
