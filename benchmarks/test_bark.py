"""Bark generate, one benchmark per configuration x batch size (ids like `bs8-offload+bettertransformer+fp16`).

Parametrized by the bark-perf plugin from --bark-configs / --bark-batch-sizes; unavailable configurations
skip with the exact reason; `pytest benchmarks --benchmark-compare` gates against the stored baseline.
"""


def test_generate(bark_case, bark_measure):
    result = bark_measure(bark_case)
    assert result.status == "ok"
    assert result.rounds, "no measured rounds"
