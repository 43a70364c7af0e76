"""Backends that run the firmware, the runner that checks them against each other, traces and the CLI."""
