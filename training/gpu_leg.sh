#!/usr/bin/env bash
# One GPU training leg from pack/ (made here by `make gpu-pack`; docs/generator.md).
#   MINUTES   budget of the leg, loading and evaluation included (default 8)
#   OUT       where the results go (the device sets it; default: a new temp folder)
#   LEG_PYTHON  the Python with torch (default python3: the device's)
#   LEG_ARGS  more arguments for `anonyface-train leg run` (e.g. --batch 128)
# Falls back to the CPU (fp32, small batch) where there is no GPU: the rehearsal.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${LEG_PYTHON:-python3}
MINUTES=${MINUTES:-8}
: "${OUT:=$(mktemp -d)}"
export OUT PYTHONUNBUFFERED=1 PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
if [ ! -f pack/PACK.json ]; then
    echo "no pack/PACK.json here: run 'make gpu-pack' first and carry pack/" >&2
    exit 2
fi
"$PY" - <<'PY'
import json, torch
info = json.load(open("pack/PACK.json"))
dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU: CPU rehearsal"
print(f"[leg] torch {torch.__version__}, {dev}; tier {info['tier']} ({info['config']}, {info['size']} px), "
      f"{info['train_crops']} train crops from #{info['train_start']}, resume from {info['checkpoint_source']}", flush=True)
PY
# shellcheck disable=SC2086
"$PY" -m anonyface.training.leg run --pack pack --minutes "$MINUTES" --out "$OUT" ${LEG_ARGS:-} 2>&1 | tee "$OUT/leg.log"
