"""The memory controller with its RAM (hdl/memory_controller.py, hdl/ram.py): byte-enabled writes, reads that
answer `mem_latency` + 3 cycles later (MmuConfig.bram_read_cycles) with `rvalid_next` one cycle ahead, data that
holds until the next read, and the walker's priority over the data path.

Both the cocotb module and its pytest entry `test_memory_controller_runner` (Verilator, Icarus, and MyHDL).
"""

from __future__ import annotations

from typing import Any

import cocotb
import pytest
import tb

from hdl.protocol import MmuConfig

PORTS = ("valid", "write", "word_addr", "byte_enable", "wdata")


def merge(word: int, data: int, byte_enable: int) -> int:
    """`word` with the enabled byte lanes replaced by those of `data`."""
    mask = sum(0xFF << 8 * lane for lane in range(8) if byte_enable >> lane & 1)
    return word & ~mask | data & mask


class MemoryEnvironment(tb.Environment):
    """`requests` random reads and writes from both clients with idle gaps; one read in flight at a time, as the
    MMU uses it. Words are read only after they were written (the RAM is never reset: X in Icarus)."""

    outputs = ("resp_rdata", "resp_rvalid", "resp_rvalid_next")

    def __init__(self, params: dict[str, Any], seed: int, requests: int, words: int, max_idle: int,
                 both_clients: float) -> None:
        super().__init__(seed)
        self.latency = MmuConfig(mem_latency=params["mem_latency"]).bram_read_cycles
        self.requests, self.words, self.max_idle, self.both = requests, words, max_idle, both_clients
        self.ram: dict[int, int] = {}
        self.read_at: int | None = None  # cycle of the last read request
        self.read_value = 0
        self.issued: tuple[str, bool, int, int, int] | None = None  # this cycle's (client, write, addr, be, data)
        self.idle = 0

    def _request(self) -> tuple[bool, int, int, int]:
        if not self.ram or self.rng.random() < 0.45:
            addr = self.rng.randrange(self.words)
            full = addr not in self.ram or self.rng.random() < 0.3
            return True, addr, 0xFF if full else self.rng.randrange(1, 256), self.rng.getrandbits(64)
        return False, self.rng.choice(list(self.ram)), 0, 0

    def drive(self) -> dict[str, int]:
        inputs = {f"{client}_{port}": 0 for client in ("walk", "data") for port in PORTS} | {"walk_claims": 0}
        self.issued = None
        busy = self.read_at is not None and self.cycle < self.read_at + self.latency
        if not self.requests and not busy:
            self.done = True
        elif self.requests and not busy and self.idle == 0:
            self.requests -= 1
            write, addr, byte_enable, data = self._request()
            client = self.rng.choice(("walk", "data"))
            self.issued = (client, write, addr, byte_enable, data)
            # the walker claims the port whenever it may ask (in the MMU, its READ and WAIT states)
            inputs |= {"walk_claims": int(client == "walk"), f"{client}_valid": 1, f"{client}_write": write,
                       f"{client}_word_addr": addr, f"{client}_byte_enable": byte_enable, f"{client}_wdata": data}
            if client == "walk" and self.rng.random() < self.both:  # the data path asks too: the walker wins
                inputs |= {"data_valid": 1, "data_write": 1, "data_word_addr": self.rng.randrange(self.words),
                           "data_byte_enable": 0xFF, "data_wdata": self.rng.getrandbits(64)}
            self.idle = self.gap(self.max_idle, 0.5)
        elif self.idle:
            self.idle -= 1
        return inputs

    def sample(self, values: dict[str, int | None]) -> None:
        reading = self.issued is not None and not self.issued[1]
        reads = [at for at in (self.read_at, self.cycle if reading else None) if at is not None]
        arrives = any(self.cycle == at + self.latency for at in reads)
        announced = any(self.cycle == at + self.latency - 1 for at in reads)
        self.expect("rvalid", values["resp_rvalid"], arrives)
        self.expect("rvalid_next", values["resp_rvalid_next"], announced)
        if self.read_at is not None and self.read_at + self.latency <= self.cycle:  # arrived, and holds
            self.expect("rdata", values["resp_rdata"], self.read_value)
        if reading:
            self.read_at = self.cycle
        if self.issued is not None:
            _, write, addr, byte_enable, data = self.issued
            if write:
                self.ram[addr] = merge(self.ram.get(addr, 0), data, byte_enable)
            else:
                self.read_value = self.ram[addr]


def _scenario(seed: int, requests: int, max_idle: int, both_clients: float = 0.0) -> Any:
    return lambda params: MemoryEnvironment(params, seed, requests, params["ram_words"], max_idle, both_clients)


SCENARIOS = {
    "back_to_back_reads_and_writes": _scenario(1, 300, 0),
    "requests_after_random_idle_cycles": _scenario(2, 200, 4),
    "the_walker_wins_when_both_ask": _scenario(3, 200, 2, both_clients=0.4),
}


@cocotb.test()
@cocotb.parametrize(scenario=list(SCENARIOS))
async def memory_scenario(dut: Any, scenario: str) -> None:
    env = SCENARIOS[scenario](tb.job()["params"])
    await tb.run_cocotb(dut, env)


PARAMS = [
    {"mem_latency": 1, "ram_words": 64},
    {"mem_latency": 3, "ram_words": 64},
    {"mem_latency": 1, "ram_words": 64, "mem_bytes": 1 << 18},  # two banks (hdl.interfaces.ram_banks): even, odd words
]


def _name(params: dict[str, Any]) -> str:
    return f"latency{params['mem_latency']}" + ("-two_banks" if "mem_bytes" in params else "")


@pytest.mark.rtl
@pytest.mark.parametrize(("simulator", "params"), tb.matrix(PARAMS, _name, verilator=(1,)))
def test_memory_controller_runner(simulator: str, params: dict[str, Any]) -> None:
    from conftest import require_simulator

    require_simulator(f"cocotb-{simulator}")
    tb.check_block(tb.BlockDesign("memory_controller", params), simulator, "test_memory_controller", SCENARIOS)
