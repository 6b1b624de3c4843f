#!/usr/bin/env bash
# Train (or continue) a run on a lent GPU machine for a fixed number of minutes, then stop cleanly so the run folder
# can come back and be resumed or exported on a CPU. One process per visible GPU through torchrun (DDP over nccl),
# bf16 autocast on CUDA (edgediff.train). The last checkpoint is at most --checkpoint-every steps old.
#
#   bash scripts/train_gpu.sh RUN_DIR [MINUTES] [extra `edgediff train` flags]
#   bash scripts/train_gpu.sh "$OUT/e128" 8                      # the 128 px recipe (--preset emoji-128)
#   bash scripts/train_gpu.sh "$OUT/e128" 8 --init-from emoji-128  # ... starting from the shipped weights
#   bash scripts/train_gpu.sh "$OUT/e32l" 4 --preset unet-l        # a larger base for the cascade: 32 px, 2x2
#                                                                 # cells (the later --preset wins), 4.5 M params
#   EDGEDIFF_DEVICE=cpu NPROC=2 bash scripts/train_gpu.sh /tmp/r 1 --steps 20 --image-size 32 --grid 2
#                                                                 # the same path on a CPU (gloo): a dry run
set -euo pipefail
out=${1:?usage: scripts/train_gpu.sh RUN_DIR [MINUTES] [train flags]}
minutes=${2:-8}
shift $(( $# >= 2 ? 2 : 1 ))
cd "$(dirname "$0")/.."

python -c "import edgediff.train" 2>/dev/null || {
  python -m pip install -q torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
    || python -m pip install -q 'torch>=2.2,<2.15'
  python -m pip install -q -e ".[train]"
}
[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || { apt-get update -qq && apt-get install -y -qq fonts-noto-color-emoji; }

device=${EDGEDIFF_DEVICE:-cuda}
nproc=${NPROC:-$(python -c "import torch; print(max(1, torch.cuda.device_count()))")}
resume=()
[ -f "$out/run.json" ] && resume=(--resume)
echo "training $out on $nproc x $device for $minutes min ${resume[*]}"

# SIGTERM after MINUTES: checkpoints are written atomically, so the newest whole one is what a resume continues from.
set +e
timeout --signal=TERM --kill-after=60 "$((minutes * 60))" \
  torchrun --standalone --nproc_per_node "$nproc" -m edgediff.cli train --data emoji --preset emoji-128 \
  --steps 200000 --batch-size 256 --lr 3e-4 --sample-every 0 --checkpoint-every 200 --device "$device" \
  --out "$out" "${resume[@]}" "$@"
rc=$?
set -e
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]; then
  echo "training failed (exit $rc)" >&2
  exit "$rc"
fi
python - "$out" <<'PY'
import sys
from edgediff.checkpoint import latest_checkpoint
path, meta = latest_checkpoint(sys.argv[1])
print(f"kept {path} (step {meta['step']}, {meta.get('train_seconds', 0):.0f} s of training); resume or export it")
PY
