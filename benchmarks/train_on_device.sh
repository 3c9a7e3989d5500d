#!/bin/bash
# A training stage on a GPU machine in one call, within a time budget.
#
#     bash benchmarks/train_on_device.sh [CONFIG] [MINUTES]
#
# CONFIG defaults to configs/gpu.yaml, MINUTES (the training time to fill)
# to 7. Run from the repository root on the GPU machine. The steps:
#   1. If .whl/ holds wheels (the packages the machine lacks: astropy,
#      pyerfa, astropy-iers-data, photutils, sep, ...), install them into
#      /tmp/site. The package itself runs from the working tree.
#   2. Measure the rate: 60 steps of CONFIG in a scratch directory (the
#      first 20, with the start-up, are not counted).
#   3. Train CONFIG with `steps` set so that the cosine schedule ends within
#      MINUTES, rounded down to a multiple of its val_every (the last step
#      then leaves a weights-only snapshot, step_NNNNNN.pt).
#   4. Copy the log, history and last snapshot to $OUT (when set), where the
#      `device` tool brings them back.
# The init checkpoint named by CONFIG must travel with the working tree
# (the tool's `carry`: cache/ is ignored by git).
set -euo pipefail
CONFIG=${1:-configs/gpu.yaml}
MINUTES=${2:-7}
export PYTHONUNBUFFERED=1
if compgen -G '.whl/*.whl' > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
python3 - <<'PY'
import torch
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')
PY
probe=$(mktemp -d)
python3 -m astro_deepcolor train --config "$CONFIG" --out-dir "$probe" \
    --log-file "$probe/train.log" --steps 100000 --max-steps 60 --no-progress
read -r out_dir val_every steps <<< "$(python3 - "$CONFIG" "$probe/train.log" "$MINUTES" <<'PY'
import re, sys
from astro_deepcolor.training.train import load_config
_, tc = load_config(sys.argv[1])
rates = [float(m) for m in re.findall(r' ([0-9.]+)s/step', open(sys.argv[2]).read())]
rate = sum(rates[1:]) / len(rates[1:])          # the first window holds the start-up
steps = int(float(sys.argv[3]) * 60 / rate) // tc.val_every * tc.val_every
print(tc.out_dir, tc.val_every, max(steps, tc.val_every))
PY
)"
echo "measured rate: $(grep -o '[0-9.]*s/step' "$probe/train.log" | tail -1); training $steps steps into $out_dir"
python3 -m astro_deepcolor train --config "$CONFIG" --steps "$steps" --no-progress
if [ -n "${OUT:-}" ]; then
    cp "$out_dir/train.log" "$out_dir/history.json" "$OUT/"
    cp "$(ls "$out_dir"/step_*.pt | tail -1)" "$OUT/"
    ls -l "$OUT"
fi
