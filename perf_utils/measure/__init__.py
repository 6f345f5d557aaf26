"""Measuring: trackers around one call, the measurer of a loaded configuration, the fidelity figures, and the
one run loop (`run.Run`) that every entry point (pytest, the CLI, gate-quality) goes through."""
