#!/usr/bin/env bash
# The main job on the demo data, end to end: data, the PSNR-oriented start model, EA-Adam population training, the
# fixed-preference Adam baseline, network interpolation between the start model and the baseline's pure-perception
# individual (#3), fusion of the population, its collapse into one plain network, and the evaluation table with its
# perception-distortion plot.
# Usage: scripts/run_demo.sh [python]   (default: .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-.venv/bin/python}
step() { echo; echo "== $*"; }

# A fresh training run refuses to start over an earlier run's checkpoints (basicsr_ea/startup.py); this script's own
# earlier runs are moved aside together, saying where, so a second `make demo` starts afresh and loses nothing.
previous=()
for run in SRResNet_demo_x4 EAAdam_demo_x4 AdamBaseline_demo_x4 Interpolation_demo_x4 Fusion_demo_x4; do
    if [ -d "experiments/$run" ]; then previous+=("$run"); fi
done
if [ ${#previous[@]} -gt 0 ]; then
    archive="experiments/demo_archived_$(date +%Y%m%d_%H%M%S)"
    mkdir -p "$archive"
    for run in "${previous[@]}"; do mv "experiments/$run" "$archive/"; done
    echo "Earlier demo runs (${previous[*]}) moved to $archive/"
fi

step 'Demo data (scikit-image samples, x4 MATLAB bicubic)'
"$PYTHON" scripts/make_demo_data.py
step 'PSNR-oriented start model (MSRResNet, L1)'
"$PYTHON" basicsr_ea/train.py -opt options/train_SRResNet_demo.yml
step 'EA-Adam population training'
"$PYTHON" basicsr_ea/train.py -opt options/train_EAAdam_demo.yml
step 'Baseline: the same population trained by Adam alone (train.ea.interval 0)'
"$PYTHON" basicsr_ea/train.py -opt options/train_EAAdam_demo.yml \
    --force_yml name=AdamBaseline_demo_x4 train:ea:interval=0
step 'Baseline: network interpolation from the start model to the Adam individual trained for perception alone' \
    '(#3, preference (0, 1)), as ESRGAN interpolates towards its GAN model'
"$PYTHON" scripts/interpolate.py -opt options/train_EAAdam_demo.yml \
    --a experiments/SRResNet_demo_x4/models/net_g_latest.pth \
    --b experiments/AdamBaseline_demo_x4/models/net_g_3_latest.pth \
    --alphas 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 --out 'experiments/Interpolation_demo_x4/net_g_alpha{alpha}.pth'
step 'Fusion of the EA-Adam population'
"$PYTHON" basicsr_ea/train.py -opt options/train_Fusion_demo.yml
step 'Collapse of the fused network into one plain MSRResNet'
"$PYTHON" scripts/collapse_fusion.py -opt options/train_Fusion_demo.yml \
    --checkpoint experiments/Fusion_demo_x4/models/net_g_latest.pth \
    --calib datasets/demo_x4/train/LR_bicubic_x4 --out experiments/Fusion_demo_x4/MSRResNet_fused_x4.pth
step 'Evaluation'
"$PYTHON" scripts/evaluate.py -opt options/eval_demo.yml
cat results/eval_demo_x4/table.md
echo "Perception-distortion plot: results/eval_demo_x4/pd_demo_val.png"
