#!/bin/bash
# One device call (`run` with carry [".whl"]): issue 12's gpu-check, then issue 11's gate-quality on the GPU with
# the time left before DEADLINE seconds. At most 8 files come back from $OUT: the five step logs, the two records
# that matter (bark shapes, legacy BetterTransformer) and the quality log, each copied there as it grows, so a
# call cut off at its limit keeps what it did.
set -u
export PYTHONUNBUFFERED=1 BARK_PERF_CACHE=/tmp/bpc HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
START=$(date +%s)
DEADLINE=${DEADLINE:-575}
OUT=${OUT:?}
if [ -z "${SKIP_INSTALL:-}" ]; then
  for d in site legacy acc19; do
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/$d .whl/$d/*.whl || exit 3
  done
  export PYTHONPATH=/tmp/site:/tmp/acc19:$PWD
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
mkdir -p "$OUT/gc" /tmp/gc
keep() {
  cp /tmp/gc/*.log "$OUT/gc/" 2>/dev/null
  for j in bark-shapes legacy-bettertransformer; do [ -f /tmp/gc/$j.json ] && cp /tmp/gc/$j.json "$OUT/gc/"; done
}
( while true; do keep; sleep 3; done ) &
COPIER=$!
timeout 480 python3 -m perf_utils gpu-check --out /tmp/gc --legacy-path /tmp/legacy
echo "gpu-check: exit $? after $(( $(date +%s) - START ))s"
kill $COPIER; keep
LEFT=$(( DEADLINE - ($(date +%s) - START) ))
echo "left for gate-quality: ${LEFT}s"
if [ "$LEFT" -gt 45 ]; then
  timeout "$LEFT" python3 -m perf_utils gate-quality --checkpoint tiny --device cuda --batch-sizes 1 --tokens 32 \
    --invocations 2 --rounds 3 --warmup 1 --repeats 4 --trials 2 --slowdowns 0.1 --buffers-mb 8 \
    >"$OUT/quality.log" 2>&1
  echo "gate-quality: exit $? after $(( $(date +%s) - START ))s"
  tail -n 30 "$OUT/quality.log"
fi
