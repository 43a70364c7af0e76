"""The Python kernel: the blog_os heap-allocation chapter, touching memory only through `firmware.cpu.Cpu`."""
