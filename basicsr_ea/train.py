"""Train with BasicSR's own pipeline and every basicsr-ea component registered.

    python basicsr_ea/train.py -opt options/train_EAAdam_x4.yml [--auto_resume] [--debug]
    torchrun --nproc_per_node=N basicsr_ea/train.py -opt X.yml --launcher pytorch
"""
import os.path as osp

import basicsr_ea  # noqa: F401  (repairs BasicSR, registers the plugin)
from basicsr.train import train_pipeline

if __name__ == '__main__':
    train_pipeline(osp.abspath(osp.join(__file__, osp.pardir, osp.pardir)))
