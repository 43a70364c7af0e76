"""The parts of the Rust `x86_64` crate (0.14, as blog_os uses it) that the paging chapter needs.

`addr` holds `VirtAddr`/`PhysAddr`; `paging` the page sizes, `Page`, `PhysFrame`, `PageTableFlags` and
page-table entries; `mapper` the `OffsetPageTable`. Page tables are read and written in the simulated RAM
through `firmware.cpu.Cpu`, never kept on the Python side.

Translation conventions, the same everywhere in this package:
- a `Result::Err` the crate returns is raised as the matching exception (`MapToError`, `AddressNotAligned`,
  ...);
- a crate panic is raised as a typed exception too (`VirtAddrNotValid`, `PageTablePanic`, `OverflowError`);
- Rust `u64` arguments must be integers in 0..2**64-1; anything else is an `OverflowError`, as Rust arithmetic
  overflow panics.
"""
