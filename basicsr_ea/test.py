"""Test with BasicSR's own pipeline and every basicsr-ea component registered.

    python basicsr_ea/test.py -opt options/test_X.yml
"""
import os.path as osp

import basicsr_ea  # noqa: F401  (repairs BasicSR, registers the plugin)
from basicsr.test import test_pipeline

if __name__ == '__main__':
    test_pipeline(osp.abspath(osp.join(__file__, osp.pardir, osp.pardir)))
