"""Bad input, second round: nothing a user owns is overwritten or lost, no typo trains with defaults, NaN weights are
refused, every broken file is named, and late failures surface at start-up; one line each, ``--debug`` keeps the
traceback. One test per finding of issue 14 (see the README's catalogue)."""
import errno
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs.srresnet_arch import MSRResNet
from basicsr.models import build_model
from builders import in_process, paired_dataset, tiny_ea_options, write_pairs
from helpers import REPO_ROOT
from scripts_loader import load_script

from basicsr_ea import files
from basicsr_ea.checkpoints import CheckpointError, save_checkpoint
from basicsr_ea.evaluation.inputs import ModelEntry, load_network
from basicsr_ea.options import OptionError
from basicsr_ea.startup import check_training_options

NETWORK = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 4}


def save_network(path, nan_at=None):
    """A tiny MSRResNet checkpoint (seeded); ``nan_at`` names a tensor whose first element becomes NaN."""
    torch.manual_seed(0)
    state = MSRResNet(num_feat=8, num_block=1, upscale=4).state_dict()
    if nan_at:
        state[nan_at].view(-1)[0] = float('nan')
    save_checkpoint({'params': state}, str(path))
    return str(path)


def inference_setup(tmp_path, names=('a', 'b')):
    """A folder of small photos, the options and checkpoint ``scripts/inference.py`` restores them with."""
    photos = tmp_path / 'photos'
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in names:
        cv2.imwrite(str(photos / f'{name}.png'), rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    opt_path = tmp_path / 'sr.yml'
    opt_path.write_text(yaml.safe_dump({'scale': 4, 'network_g': NETWORK, 'path': {'pretrain_network_g': None}}))
    return str(photos), str(opt_path), save_network(tmp_path / 'net.pth')


def run_inference(*args):
    """``scripts/inference.py`` in this process; returns the message it exits with (None when it exits 0)."""
    try:
        load_script('inference').main(list(args))
    except SystemExit as stop:
        return str(stop.code)
    return None


def folder_bytes(folder):
    return {name: open(os.path.join(folder, name), 'rb').read() for name in sorted(os.listdir(folder))}


def test_inference_into_its_input_folder_is_refused_and_the_photos_are_untouched(tmp_path):
    photos, opt, net = inference_setup(tmp_path)
    before = folder_bytes(photos)
    message = run_inference('-opt', opt, '-i', photos, '-o', photos, '--checkpoint', net)
    assert 'would overwrite an input image' in message and f'{photos}/a.png' in message
    assert folder_bytes(photos) == before


def test_inference_on_a_full_disk_names_the_output_and_leaves_no_empty_file(tmp_path, monkeypatch):
    photos, opt, net = inference_setup(tmp_path, names=('a',))
    out = tmp_path / 'out'

    def disk_full(fd):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(files.os, 'fsync', disk_full)
    message = run_inference('-opt', opt, '-i', photos, '-o', str(out), '--checkpoint', net)
    assert message.startswith('error: ') and f'could not write {out}/a.png: the disk is full' in message
    assert os.listdir(out) == []


def test_inference_skips_an_empty_image_restores_the_rest_and_exits_non_zero(tmp_path, capsys):
    photos, opt, net = inference_setup(tmp_path, names=('a', 'b'))
    open(os.path.join(photos, 'b.png'), 'wb').close()
    out = tmp_path / 'out'
    message = run_inference('-opt', opt, '-i', photos, '-o', str(out), '--checkpoint', net)
    assert message == 'error: 1 of 2 images could not be restored (see above).'
    assert f'skipped {photos}/b.png' in capsys.readouterr().out
    assert os.listdir(out) == ['a.png'] and cv2.imread(str(out / 'a.png')).shape == (48, 48, 3)


def test_empty_training_image_is_named(tmp_path, pipeline_repairs):
    gt, lq = write_pairs(str(tmp_path), names=('a',))
    open(os.path.join(gt, 'a.png'), 'wb').close()
    with pytest.raises(ValueError, match=f'{gt}/a.png is empty'):
        paired_dataset(gt, lq)[0]


@pytest.fixture
def ea_run(demo_data, tmp_path):
    """EA-Adam options as BasicSR's parse_options leaves them, for the start-up checks."""
    return in_process(tiny_ea_options('unit', demo_data), tmp_path / 'experiment')


@pytest.mark.parametrize('change, message', [
    (lambda t: t['ea']['fitness'].update(patch_sise=64), 'train.ea.fitness.patch_sise: unknown option'),
    (lambda t: t['ea']['fitness'].update(num_image=2), 'train.ea.fitness.num_image: unknown option'),
    (lambda t: t.update(population_sise=3), 'train.population_sise: unknown option'),
    (lambda t: t['ea']['fitness'].update(num_images='2'), 'train.ea.fitness.num_images: expected int'),
])
def test_option_typos_at_every_level_are_errors_before_any_work(ea_run, change, message):
    change(ea_run['train'])
    with pytest.raises(OptionError, match=message):
        check_training_options(ea_run)
    assert os.listdir(ea_run['path']['models']) == os.listdir(ea_run['path']['training_states']) == []


def test_a_batch_larger_than_an_epoch_is_refused(ea_run):
    ea_run['datasets']['train']['batch_size_per_gpu'] = 1000
    with pytest.raises(OptionError, match='datasets.train.batch_size_per_gpu: 1000 .* would train nothing'):
        check_training_options(ea_run)


def test_an_objective_that_cannot_run_on_the_fitness_patch_fails_at_start_up(ea_run):
    ea_run['train']['ea']['objectives'] = [{'type': 'l1'}, {'type': 'niqe'}]  # NIQE needs 192 px; the patch is 64
    with pytest.raises(OptionError, match='train.ea'):
        check_training_options(ea_run)


def test_a_missing_metric_weights_file_fails_at_start_up(ea_run, tmp_path):
    missing = str(tmp_path / 'alexnet.pth')
    ea_run['val']['metrics']['lpips'] = {'type': 'calculate_lpips', 'crop_border': 4, 'backbone_path': missing}
    with pytest.raises(FileNotFoundError, match=f'val.metrics.lpips.backbone_path: {missing} not found'):
        check_training_options(ea_run)


def test_a_rerun_under_an_existing_name_is_refused_and_moves_nothing(ea_run):
    models = ea_run['path']['models']
    save_network(os.path.join(models, 'net_g_0_latest.pth'))
    with pytest.raises(FileExistsError, match='already holds an earlier run .* --auto_resume'):
        check_training_options(ea_run)
    assert os.listdir(models) == ['net_g_0_latest.pth']


def test_a_start_checkpoint_with_a_nan_weight_is_refused_naming_file_and_tensor(ea_run, tmp_path):
    path = save_network(tmp_path / 'start.pth', nan_at='body.0.conv1.weight')
    ea_run['network_g'] = dict(NETWORK)
    ea_run['path']['pretrain_network_g'] = path
    with pytest.raises(CheckpointError, match=f'{path}: tensor body.0.conv1.weight holds NaN'):
        build_model(ea_run)


def test_evaluation_refuses_a_nan_checkpoint_instead_of_printing_a_row(tmp_path):
    path = save_network(tmp_path / 'nan.pth', nan_at='conv_last.bias')
    with pytest.raises(CheckpointError, match=f'nan row: {path}: tensor conv_last.bias holds NaN'):
        load_network(ModelEntry(label='nan row', network=NETWORK, checkpoint=path), 'cpu')


def train_command(tmp_path, *extra):
    """``basicsr_ea/train.py`` on options with a typo (``train.population_sise``), as a user runs it."""
    opt = tiny_ea_options('typo', str(tmp_path))
    opt['train']['population_sise'] = 3
    opt_path = tmp_path / 'typo.yml'
    opt_path.write_text(yaml.safe_dump(opt))
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'basicsr_ea', 'train.py'), '-opt', str(opt_path),
                           *extra], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})


def test_train_py_answers_an_option_error_in_one_line_and_debug_keeps_the_traceback(tmp_path):
    plain = train_command(tmp_path)
    assert plain.returncode == 1
    [line] = plain.stderr.strip().splitlines()
    assert line.startswith(f'error: {tmp_path}/typo.yml: train.population_sise: unknown option; known: ')
    assert line.endswith('(--debug shows the traceback)')
    debug = train_command(tmp_path, '--debug')
    assert debug.returncode == 1 and 'Traceback' in debug.stderr and 'population_sise' in debug.stderr
    assert not os.path.exists(os.path.join(REPO_ROOT, 'experiments', 'typo'))
