#!/usr/bin/env bash
# Every GPU benchmark in one go (benchmarks/gpu_*.py that exist), each line also written to $LOG
# (default: gpu-benchmarks.log, or $OUT/gpu-benchmarks.log where OUT is set). Extra arguments go to every script,
# e.g. `bash benchmarks/gpu_all.sh --max-seconds 30`. Without CUDA each script prints its skip line and exits 0.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG="${LOG:-${OUT:-.}/gpu-benchmarks.log}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
{
  echo "gpu_all: $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo no-git)"
  "$PY" - <<'PY'
import platform, torch, transformers
name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
print(f"gpu_all: {name}; python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"transformers {transformers.__version__}")
PY
} 2>&1 | tee "$LOG"
status=0
for script in gpu_sft gpu_eval gpu_rl; do
  [ -f "benchmarks/$script.py" ] || continue
  "$PY" "benchmarks/$script.py" "$@" 2>&1 | tee -a "$LOG" || status=1
done
exit $status
