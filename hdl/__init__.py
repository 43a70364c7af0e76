"""Synthesizable MyHDL blocks of the MMU, one block per file; `protocol` holds the constants they share."""
