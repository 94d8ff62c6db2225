"""Every test runs with the plugin imported (BasicSR repaired, components registered) on the CPU."""
import os
import sys

import pytest
import torch

import basicsr_ea  # noqa: F401
from basicsr_ea.testing import write_random_vgg19

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pytest_terminal_summary(terminalreporter, config):
    """The shuffled order's seed at the end, where ``-q`` still prints (pytest-randomly's header line is hidden)."""
    if config.pluginmanager.has_plugin('randomly'):
        seed = config.getoption('randomly_seed')
        terminalreporter.write_line(f'test order: pytest-randomly seed {seed}; repeat it with --randomly-seed={seed}')


@pytest.fixture(autouse=True, scope='session')
def one_torch_thread():
    """The tests' networks are tiny and many tests start training processes beside this one: OpenMP threads
    spin-waiting for each other on a 2-core machine made tests up to tenfold slower, one thread does not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def pipeline_repairs():
    """BasicSR with the repairs ``basicsr_ea/train.py`` runs its pipeline with (``compat.PipelineRepairs``)."""
    from basicsr_ea.compat import PipelineRepairs
    with PipelineRepairs() as repairs:
        yield repairs


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


@pytest.fixture
def fixed_patch_data(demo_data, tmp_path):
    """Eight 128 px HR patches (and their LR) of exactly the training patch size: random crops and flips then draw
    nothing different, so one process and two see the same global batches."""
    import cv2
    from scripts_loader import load_script
    bicubic_lr = load_script('make_demo_data').bicubic_lr
    root = tmp_path / 'patches'
    for split in ('train', 'val'):
        for folder in ('HR', 'LR_bicubic_x4'):
            (root / split / folder).mkdir(parents=True)
    hr_folder = os.path.join(demo_data, 'train', 'HR')
    for k, name in enumerate(sorted(os.listdir(hr_folder))[:8]):
        hr = cv2.imread(os.path.join(hr_folder, name))[:128, :128]
        for split in ('train', 'val') if k < 2 else ('train', ):
            cv2.imwrite(str(root / split / 'HR' / name), hr)
            cv2.imwrite(str(root / split / 'LR_bicubic_x4' / name), bicubic_lr(hr[..., ::-1])[..., ::-1])
    return str(root)


@pytest.fixture
def one_and_two_processes(tmp_path):
    """``train(opt, files)`` runs ``opt`` as 1 process x batch 4 and as 2 processes x batch 2 (DDP, gloo), each under
    its own experiment name (two runs of one name: BasicSR would archive the first), and returns the absolute
    differences of every weight of the checkpoints ``files`` (in models/) between the two, flattened."""
    from helpers import remove_experiment, run_train

    def train(opt, files=('net_g_latest.pth', )):
        name, weights = opt['name'], {}
        for processes, batch in ((None, 4), (2, 2)):
            opt['name'] = f'{name}_{batch}'
            opt['datasets']['train']['batch_size_per_gpu'] = batch
            try:
                exp_dir, _ = run_train(opt, tmp_path, launcher=processes)
                weights[processes] = [torch.load(os.path.join(exp_dir, 'models', file), weights_only=True)['params']
                                      for file in files]
            finally:
                remove_experiment(opt['name'])
        opt['name'] = name
        return torch.cat([(double[key] - single[key]).abs().flatten()
                          for single, double in zip(weights[None], weights[2]) for key in single])

    return train


@pytest.fixture
def ea_opt(demo_data, tmp_path):
    """The tiny EA-Adam options, ready to build the model in this process."""
    from builders import in_process, tiny_ea_options
    return in_process(tiny_ea_options('unit', demo_data), tmp_path)


@pytest.fixture
def run_files(tmp_path):
    """An EA-Adam run's models/ folder in miniature: 3 experts and the discriminator of individual 2."""
    from basicsr.archs import build_network
    from builders import BACKBONE, DISCRIMINATOR, save_experts
    models = save_experts(tmp_path / 'ea' / 'models', BACKBONE)
    torch.manual_seed(7)
    d_path = os.path.join(models, 'net_d_2_latest.pth')
    torch.save({'params': build_network(DISCRIMINATOR).state_dict()}, d_path)
    return models, d_path
