#!/usr/bin/env bash
# The main job on the demo data, end to end: data, the PSNR-oriented start model, EA-Adam population training.
# Usage: scripts/run_demo.sh [python]   (default: .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-.venv/bin/python}

"$PYTHON" scripts/make_demo_data.py
echo '== PSNR-oriented start model (MSRResNet, L1)'
"$PYTHON" basicsr_ea/train.py -opt options/train_SRResNet_demo.yml
echo '== EA-Adam population training'
"$PYTHON" basicsr_ea/train.py -opt options/train_EAAdam_demo.yml
last_table=$(ls -v experiments/EAAdam_demo_x4/ea/objectives_*.md | tail -n 1)
echo "== Last EA phase ($last_table; fronts: experiments/EAAdam_demo_x4/ea/front_*.png)"
cat "$last_table"
