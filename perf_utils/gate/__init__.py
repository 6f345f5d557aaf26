"""Judging records: thresholds, the comparison of a run with a baseline, the gate's decision and exit status,
and trends over kept runs. Imports no torch, nothing from `bark` or `measure`."""
