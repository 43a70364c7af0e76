"""Export the `mmu` top to Verilog for one configuration, and lint it with Verilator.

`exported_verilog` is the cached conversion every simulator build starts from; `export_verilog` puts a copy where a
user asked for it (build/verilog/<config_tag>/mmu.v by default), rewritten only when its content changes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from cosim.toolchain import build
from hdl.interfaces import WORD_BYTES, ram_banks, top_ports
from hdl.mmu import mmu
from hdl.protocol import AXI_DEFAULT_ID_WIDTH, MmuConfig, TlbPolicy

TOP_MODULE = "mmu"

# MyHDL makes one Python Signal per RAM word: 64 MiB would take minutes and gigabytes to convert. The export builds
# each bank of the RAM (hdl.interfaces.ram_banks) with this many words and writes the real depth into the arrays'
# declarations (the address logic is built for the real size either way).
_STAND_IN_BANK_WORDS = 2
_RAM_DECLARATION = re.compile(r"^(reg \[63:0\] \w*mem_words \[0:)" + str(_STAND_IN_BANK_WORDS) + r"(-1\];)$", re.M)
# Written after the RAM's declaration: the RAM reads as zero until written, in every simulator (Icarus would start it
# as X). Yosys (which defines SYNTHESIS) skips the loop: unrolling 32768 iterations takes it many minutes, and a block
# RAM without initial values is all zeros in ECP5 (DP16KD) and iCE40 (EBR) bitstreams anyway. `--ram-init` adds one
# assignment per preloaded word after the loop, at the marker, which simulators and Yosys (the block RAM's initial
# contents) both take. Memories that cannot be initialised (the iCE40 UltraPlus SPRAM: Yosys maps only a RAM
# without initial values to it) need the block left out: RAM_NO_INIT_DEFINE.
RAM_NO_INIT_DEFINE = "MMU_RAM_NO_INIT"
_RAM_INIT_MARKER = "    // preloaded words (mmucosim verilog --ram-init) follow"
_RAM_INIT_BLOCK = """// The RAM starts as zero (with --ram-init: as preloaded), in every simulator and in an FPGA's
// block RAM. Define {no_init} to leave it undefined instead, for memories that cannot be
// initialised (iCE40 SPRAM). Synthesis skips the zeroing loop: block RAM configures as zeros.
`ifndef {no_init}
initial begin: {name}_init
`ifndef SYNTHESIS
    integer word;
    for (word = 0; word < {words}; word = word + 1) begin
        {name}[word] = 64'h0;
    end
`endif
{marker}
end
`endif
"""


_RAM_DECLARATION_ANY = re.compile(r"^reg \[63:0\] (\w*mem_words) \[0:\d+-1\];$", re.M)


class RamInitError(ValueError):
    """A --ram-init file that is not $readmemh hex words, or holds a word outside the RAM."""


class VerilogLintError(Exception):
    """Verilator found warnings or errors in the exported Verilog."""


def config_tag(config: MmuConfig) -> str:
    """A short readable name of a configuration, e.g. `e16w16plru_p8_m1M_l1_pa40`; distinct configs, distinct tags.

    The AXI memory adds `_axi` (and `_id<bits>` for a non-default ID width); a bram configuration has neither.
    """
    policy = TlbPolicy(config.tlb_policy).name.lower()
    tag = (f"e{config.tlb_entries}w{config.ways}{policy}_p{config.pwc_entries}_m{_size_text(config.mem_bytes)}"
           f"_l{config.mem_latency}_pa{config.maxphyaddr}")
    if config.memory != "bram":
        tag += f"_{config.memory}"
        if config.axi_id_width != AXI_DEFAULT_ID_WIDTH:
            tag += f"_id{config.axi_id_width}"
    return tag


def _size_text(n_bytes: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n_bytes % (1 << shift) == 0:
            return f"{n_bytes >> shift}{unit}"
    return str(n_bytes)


def convert_text(config: MmuConfig) -> str:
    """The Verilog of the `mmu` top for `config` (module `mmu`), byte-for-byte reproducible.

    The conversion runs in a fresh interpreter: MyHDL numbers instance names from process-wide counters, so a
    second conversion in the same process would rename every internal signal (and defeat the build caches); and
    with a fixed hash seed, as MyHDL writes sensitivity lists in set order.
    """
    config.validate()
    fields = {**dataclasses.asdict(config), "tlb_policy": int(config.tlb_policy)}
    python_path = os.pathsep.join(filter(None, [str(build.PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-m", "cosim.toolchain.export", json.dumps(fields)], capture_output=True,
                            text=True, check=False,
                            env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": python_path})
    if result.returncode != 0:
        raise RuntimeError(f"MyHDL conversion of {config} failed:\n{result.stderr.strip()}")
    return result.stdout


def _convert_here(config: MmuConfig) -> str:
    """The conversion proper; see convert_text."""
    # MyHDL's converter searches every non-Signal top argument for Signals and recurses forever through an Enum
    # member's class: the top gets the policy as a plain int (TlbPolicy is an IntEnum, so it compares the same).
    plain_config = dataclasses.replace(config, tlb_policy=int(config.tlb_policy))
    banks = ram_banks(config.mem_bytes) if config.memory == "bram" else 0  # on AXI the RAM is outside the mmu
    top = mmu(config=plain_config, ram_words=_STAND_IN_BANK_WORDS * max(banks, 1), **top_ports(plain_config))
    with tempfile.TemporaryDirectory(prefix="mmu_export_") as tmp:
        top.convert(hdl="Verilog", name=TOP_MODULE, path=tmp, testbench=False)
        text = (Path(tmp) / f"{TOP_MODULE}.v").read_text()
    text = re.sub(r"^// Date:.*\n", "", text, flags=re.M)
    text = re.sub(r"^// File: .*$", f"// File: {TOP_MODULE}.v", text, count=1, flags=re.M)
    words = config.mem_bytes // WORD_BYTES // max(banks, 1)  # of each bank

    def declare_and_zero(match: re.Match[str]) -> str:
        name = match[0].split()[2]
        return f"{match[1]}{words}{match[2]}\n" + _RAM_INIT_BLOCK.format(
            name=name, words=words, marker=_RAM_INIT_MARKER, no_init=RAM_NO_INIT_DEFINE).rstrip("\n")

    text, declarations = _RAM_DECLARATION.subn(declare_and_zero, text)
    if declarations != banks:
        raise RuntimeError(f"expected {banks} RAM array declarations in the converted Verilog, found {declarations}")
    return text


def exported_verilog(config: MmuConfig, build_root: Path | None = None) -> Path:
    """The Verilog of the `mmu` for `config`, converted once per design and configuration (cosim.toolchain.build)."""

    def make(directory: Path) -> None:
        try:
            text = convert_text(config)
        except RuntimeError as exc:  # the converter's own account of a design it cannot convert
            raise build.BuildError(f"exporting the Verilog of {config_tag(config)} failed: {exc}") from exc
        (directory / f"{TOP_MODULE}.v").write_text(text)

    inputs = [build.hdl_digest(), repr(config)]
    return build.cached("verilog", config_tag(config), inputs, f"{TOP_MODULE}.v", make, build_root) / f"{TOP_MODULE}.v"


def read_ram_init(path: Path, words: int) -> dict[int, int]:
    """The words of a $readmemh file: hex 64-bit words, whitespace-separated (one a line, usually), from word 0
    on; `@hex` moves to that word address; `//` and `/* */` comments. Returns {word address: value} of the words
    that are not zero. Raises RamInitError (with the line) for anything else or a word beyond `words`."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m[0].count("\n"), Path(path).read_text(), flags=re.S)
    values: dict[int, int] = {}
    address = 0
    for number, line in enumerate(text.splitlines(), start=1):
        for token in line.split("//")[0].split():
            try:
                value = int(token[1:] if token.startswith("@") else token.replace("_", ""), 16)
            except ValueError:
                raise RamInitError(f"{path}:{number}: not a hex word: {token!r}") from None
            if token.startswith("@"):
                address = value
                continue
            if value >> 64:
                raise RamInitError(f"{path}:{number}: {token} is wider than a 64-bit word")
            if address >= words:
                raise RamInitError(f"{path}:{number}: word {address:#x} is beyond the RAM's {words} words")
            if value:
                values[address] = value
            else:
                values.pop(address, None)
            address += 1
    return values


def preload(verilog_text: str, values: dict[int, int]) -> str:
    """The exported Verilog with the RAM starting as `values` ({word address: value}) instead of all zeros.

    The banks' arrays are declared in bank order, each with its own initial block; the banks interleave words
    (hdl.memory_controller: of two, the even words are the first's), so word `address` is word `address // banks`
    of bank `address % banks`."""
    names = [match[1] for match in _RAM_DECLARATION_ANY.finditer(verilog_text)]
    banks = len(names)
    pieces = verilog_text.split(_RAM_INIT_MARKER)  # one marker per bank, in the same order
    for bank, name in enumerate(names):
        pieces[bank] += _RAM_INIT_MARKER + "".join(
            f"\n    {name}[{address // banks}] = 64'h{value:016x};"
            for address, value in sorted(values.items()) if address % banks == bank)
    return "".join(pieces)


def export_verilog(config: MmuConfig, build_root: Path = Path("build"), ram_init: Path | None = None) -> Path:
    """Write build_root/verilog/<config_tag>/mmu.v for `config` (only if its content changes) and return its path.

    `ram_init`: a $readmemh file of 64-bit words (read_ram_init) the RAM starts with, written into the Verilog.
    """
    path = Path(build_root) / "verilog" / config_tag(config) / f"{TOP_MODULE}.v"
    text = exported_verilog(config).read_text()
    if ram_init is not None:
        text = preload(text, read_ram_init(ram_init, config.mem_bytes // WORD_BYTES))
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(".v.tmp")
        staging.write_text(text)
        staging.replace(path)  # atomic: a concurrent reader never sees half a file
    return path


def lint(path: Path) -> None:
    """Run `verilator --lint-only -Wall` on `path` alone (no waivers); raise VerilogLintError listing the warnings."""
    verilator = build.verilator_root() / "bin" / "verilator"
    command = [str(verilator), "--lint-only", "-Wall", "--top-module", TOP_MODULE, str(path)]
    result = subprocess.run(command, capture_output=True, text=True, env=build.verilator_env(), check=False)
    messages = [line for line in (result.stdout + result.stderr).splitlines()
                if line.startswith("%Warning") or line.startswith("%Error")]
    if result.returncode != 0 or messages:
        details = "\n".join(messages) or result.stderr.strip() or f"verilator exited with {result.returncode}"
        raise VerilogLintError(f"verilator --lint-only -Wall found problems in {path}:\n{details}")


if __name__ == "__main__":  # the child process of convert_text: config fields as JSON in, Verilog out
    warnings.simplefilter("ignore")  # MyHDL warns about every constant-driven signal
    sys.stdout.write(_convert_here(MmuConfig(**json.loads(sys.argv[1]))))
