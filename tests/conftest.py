"""Every test runs with the plugin imported (BasicSR repaired, components registered) on the CPU."""
import os
import sys

import pytest

import basicsr_ea  # noqa: F401

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope='session')
def python():
    """The interpreter that runs the tests, for subprocess runs of basicsr_ea/train.py."""
    return sys.executable
