"""Every test runs with the plugin imported (BasicSR repaired, components registered) on the CPU."""
import os
import sys

import pytest
import torch

import basicsr_ea  # noqa: F401
from basicsr_ea.testing import write_random_vgg19

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True, scope='session')
def one_torch_thread():
    """The tests' networks are tiny and many tests start training processes beside this one: OpenMP threads
    spin-waiting for each other on a 2-core machine made tests up to tenfold slower, one thread does not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """The x4 SR demo data set (folders and LMDB), built once per test session."""
    from scripts_loader import load_script
    root = str(tmp_path_factory.mktemp('demo') / 'demo_x4')
    load_script('make_demo_data').make_demo_data(root)
    return root


@pytest.fixture(scope='session')
def random_vgg19(tmp_path_factory):
    """torchvision's VGG19 with random weights (the ImageNet file cannot be downloaded here); the classifier, which
    the perceptual loss never runs, is stored as stride-0 zeros: 80 MB instead of 550."""
    path = str(tmp_path_factory.mktemp('vgg') / 'vgg19_random.pth')
    write_random_vgg19(path)
    return path


@pytest.fixture
def experiment_name(request):
    """A unique experiment name whose experiments/ and tb_logger/ folders are removed after the test."""
    from helpers import remove_experiment
    name = 'pytest_' + request.node.name.replace('[', '_').replace(']', '')
    remove_experiment(name)
    yield name
    remove_experiment(name)
