"""Test with BasicSR's own pipeline and every basicsr-ea component registered.

    python basicsr_ea/test.py -opt options/test_X.yml [--debug]

As ``train.py``: BasicSR 1.4.2's repairs, the options checked before any image is read, one line per mistake.
"""
import basicsr_ea  # noqa: F401  (repairs BasicSR's import, registers the plugin)
from basicsr.test import test_pipeline
from basicsr_ea.cli import run_pipeline
from basicsr_ea.startup import check_test_options

if __name__ == '__main__':
    run_pipeline(test_pipeline, check_test_options)
