#!/usr/bin/env bash
# Compare frame-model variants on a GPU machine, each at the step count 2 CPU cores reach
# in the training script's 45 minutes (issue 5: the shipped model must train in about an
# hour on 2 cores), and bring back their evaluations and the best variants' weights.
#
#   bash moderation/frame_training/gpu_sweep.sh                      # default variants, results in $OUT
#   bash moderation/frame_training/gpu_sweep.sh --variant 'base:3357:' --variant 'w32:2000:--width 32'
#   SWEEP_TINY=1 bash moderation/frame_training/gpu_sweep.sh         # dry run on CPU: ~3 min on 2 cores
#
# Run from anywhere; it works in the repository root. Wheels in .whl/ (packages the GPU
# image lacks: open_clip_torch, ftfy, wcwidth, av) are installed into /tmp/site first, and
# .whl/DejaVuSans.ttf becomes the watermark font where the machine has none.
# Everything else is moderation/frame_training/sweep.py (its docstring says what each
# stage does): train --steps N --device cuda per variant, calibrate and evaluate on the
# GPU, one summary table on stdout, summary.json / logs.tar.gz / NAME.tar in $OUT.
# Extra arguments go to sweep.py (--deadline, --keep, --workers, --variant, ...).
set -u -o pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-python3}

stamp() { echo "[gpu_sweep $(date +%T)] $*"; }

if compgen -G ".whl/*.whl" >/dev/null; then
    stamp "installing $(ls .whl | wc -l) carried wheels into /tmp/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { stamp "wheel install failed"; exit 1; }
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# The watermark's font (generation/watermark.py): without it clips render with Pillow's
# own font and no longer match the renders the shipped numbers were measured on.
font=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
if [ ! -f "$font" ] && [ -f .whl/DejaVuSans.ttf ]; then
    mkdir -p "$(dirname "$font")" && cp .whl/DejaVuSans.ttf "$font" && stamp "installed $font"
fi
# A missing module here would otherwise surface minutes later, in every variant's log.
"$PY" - <<'EOF' || { stamp "imports failed"; exit 1; }
import importlib, os, sys, time
t = time.time()
for name in ("torch", "open_clip", "av", "ftfy", "safetensors.torch", "tqdm", "PIL", "numpy",
             "moderation.frame_training.train", "moderation.frame_training.calibrate",
             "moderation.frame_training.evaluate", "moderation.frame_training.sweep", "generation.procedural",
             "generation.encoding"):
    importlib.import_module(name)
import torch, open_clip, av, numpy, PIL
print(f"imports ok in {time.time() - t:.1f} s: python {sys.version.split()[0]}, torch {torch.__version__}, "
      f"open_clip {open_clip.__version__}, av {av.__version__}, numpy {numpy.__version__}, "
      f"pillow {PIL.__version__}, cores {len(os.sched_getaffinity(0))}, cuda {torch.cuda.is_available()}"
      + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else ""))
EOF

if [ "${SWEEP_TINY:-0}" = 1 ]; then
    # The whole pipeline at toy sizes on the CPU: proves the stages connect, measures nothing.
    stamp "tiny dry run"
    exec "$PY" -m moderation.frame_training.sweep --device cpu --work "${SWEEP_WORK:-/tmp/frame-sweep-tiny}" \
        --out "${OUT:-/tmp/frame-sweep-tiny/out}" --clips 48 --val 6 --calib 30 --test 30 --obf 10 --batch 16 \
        --steps-override 2 --workers 2 --prerender-workers 2 --threads 1 --parallel 2 --deadline 300 \
        --variant 'base:2:' --variant 's144uw3:2:--image-size 144 --unsafe-weight 3' "$@"
fi
stamp "sweep"
exec "$PY" -m moderation.frame_training.sweep "$@"
