"""Test with BasicSR's own pipeline and every basicsr-ea component registered.

    python basicsr_ea/test.py -opt options/test_X.yml [--debug]

As ``train.py``: BasicSR 1.4.2's repairs, the options checked before any image is read, one line per mistake.
"""
import os.path as osp

import basicsr_ea  # noqa: F401  (repairs BasicSR's import, registers the plugin)
from basicsr.test import test_pipeline
from basicsr_ea.cli import run
from basicsr_ea.compat import PipelineRepairs
from basicsr_ea.startup import check_test_options

ROOT = osp.abspath(osp.join(__file__, osp.pardir, osp.pardir))


def main():
    with PipelineRepairs(check_options=check_test_options):
        test_pipeline(ROOT)


if __name__ == '__main__':
    run(main)
