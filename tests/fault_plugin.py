"""Loaded into a real benchmark run with `-p fault_plugin` (tests/ on PYTHONPATH): replaces configurations
with faulty copies under the same names, so the faulty run is compared with the healthy baseline.

BARK_PERF_FAULT=<fault spec>        (see perf_utils.faults.parse), applied to
BARK_PERF_FAULT_CONFIGS=a,b         (default: fp32)
"""

import os

from perf_utils.bark import configs
from perf_utils.measure import faults


def pytest_configure(config):
    spec = os.environ.get("BARK_PERF_FAULT")
    if not spec:
        return
    for name in os.environ.get("BARK_PERF_FAULT_CONFIGS", "fp32").split(","):
        configs.register(faults.inject(configs.get(name), spec), replace=True)
