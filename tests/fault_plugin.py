"""Loaded into a real benchmark run with `-p fault_plugin` (tests/ on PYTHONPATH): replaces configurations
with faulty copies under the same names, so the faulty run is compared with the healthy baseline.

BARK_PERF_FAULT=<fault spec>        (see perf_utils.measure.faults.parse), applied to
BARK_PERF_FAULT_CONFIGS=a,b         (default: fp32)
BARK_PERF_NUMERICS=<sub-model>:<factor>   scales that sub-model's logits in every instance of its class, the
                                    fidelity reference included: what an upgrade changing Bark's numbers does
"""

import os

from perf_utils.bark import configs
from perf_utils.measure import faults


def _scale_logits(spec: str) -> None:
    from transformers.models.bark import modeling_bark

    sub, factor = spec.split(":")
    cls = {"semantic": modeling_bark.BarkSemanticModel, "coarse": modeling_bark.BarkCoarseModel,
           "fine": modeling_bark.BarkFineModel}[sub]  # fmt: skip
    inner = cls.forward

    def forward(self, *args, **kwargs):
        out = inner(self, *args, **kwargs)
        out.logits = out.logits * float(factor)
        return out

    cls.forward = forward


def pytest_configure(config):
    if numerics := os.environ.get("BARK_PERF_NUMERICS"):
        _scale_logits(numerics)
    spec = os.environ.get("BARK_PERF_FAULT")
    if not spec:
        return
    for name in os.environ.get("BARK_PERF_FAULT_CONFIGS", "fp32").split(","):
        configs.register(faults.inject(configs.get(name), spec), replace=True)
