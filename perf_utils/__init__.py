"""Performance regression suite for Bark: configurations -> loading -> workload -> measurement -> record ->
comparison -> report. Usable without pytest; `perf_utils.plugin` is the thin pytest layer."""

__version__ = "0.1.0"
