"""Train with BasicSR's own pipeline and every basicsr-ea component registered.

    python basicsr_ea/train.py -opt options/train_EAAdam_x4.yml [--auto_resume] [--debug]
    torchrun --nproc_per_node=N basicsr_ea/train.py -opt X.yml --launcher pytorch

The pipeline runs with BasicSR 1.4.2's repairs (``compat.PipelineRepairs``) and the project's option checks
(``startup.check_training_options``) before any folder is made or image read; a user's mistake is one line (see
``cli``).
"""
import basicsr_ea  # noqa: F401  (repairs BasicSR's import, registers the plugin)
from basicsr.train import train_pipeline
from basicsr_ea.cli import run_pipeline
from basicsr_ea.startup import check_training_options

if __name__ == '__main__':
    run_pipeline(train_pipeline, check_training_options)
