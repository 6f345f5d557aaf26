"""What a run produces and how it is kept: the run record, the metric vocabulary, summaries, the typed fidelity
result and the store (baselines and kept runs). Imports no torch: judging saved JSON needs none."""
