"""The EA-Adam authors' released models (``EA-Adam-{srresnet,rrdb,swinir}.pt``): a checkpoint in their format
(``{'model_state_dict': ...}``, DataParallel's ``module.`` prefix) restores exactly what the same weights saved
BasicSR's way restore, and ``options/eval_EAAdam_authors.yml`` builds the paper's networks."""
import os

import pytest
import torch
from basicsr.archs import build_network
from builders import BACKBONES, write_pairs
from helpers import REPO_ROOT, load_options

from basicsr_ea.checkpoints import build_and_load
from basicsr_ea.evaluation import run_evaluation
from basicsr_ea.evaluation.runner import prepare
from basicsr_ea.tiling import restore

AUTHORS_OPTIONS = os.path.join(REPO_ROOT, 'options', 'eval_EAAdam_authors.yml')
# Parameters of the paper's backbones (MSRResNet 64x16, RRDBNet 64x23 growth 32, SwinIR-light), as published.
PAPER_PARAMETERS = {'MSRResNet': 1_517_571, 'RRDBNet': 16_697_987, 'SwinIR': 929_628}


def save_both_ways(folder, network, seed=0):
    """The same random weights as BasicSR saves them and as the authors' release does; returns both paths."""
    torch.manual_seed(seed)
    state = build_network(network).state_dict()
    basicsr_path, authors_path = os.path.join(folder, 'net_g.pth'), os.path.join(folder, 'EA-Adam.pt')
    torch.save({'params': state}, basicsr_path)
    torch.save({'model_state_dict': {f'module.{key}': value for key, value in state.items()}}, authors_path)
    return basicsr_path, authors_path


@pytest.mark.parametrize('arch', sorted(BACKBONES))
def test_authors_format_restores_identically(arch, tmp_path):
    network = BACKBONES[arch]
    basicsr_path, authors_path = save_both_ways(str(tmp_path), network)
    ours = build_and_load(network, basicsr_path, 'params')
    theirs = build_and_load(network, authors_path, 'model_state_dict')
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(value, theirs.state_dict()[key]) for key, value in ours.state_dict().items())
    lq = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    scale = network.get('upscale', network.get('scale'))
    with torch.no_grad():
        diff = (restore(ours, lq, scale=scale) - restore(theirs, lq, scale=scale)).abs().max().item()
    assert diff == 0


def test_authors_rows_of_an_evaluation_equal_basicsr_rows(tmp_path):
    """Through ``scripts/evaluate.py``'s path: the options' ``param_key: model_state_dict`` row and the BasicSR
    row of the same weights give the same table cells."""
    network = BACKBONES['MSRResNet']
    basicsr_path, authors_path = save_both_ways(str(tmp_path), network)
    gt, lq = write_pairs(str(tmp_path / 'set'))
    opt = {'name': 'pytest_authors', 'scale': 4, 'device': 'cpu',
           'models': [{'label': 'BasicSR', 'network': network, 'checkpoint': basicsr_path},
                      {'label': 'authors', 'network': network, 'checkpoint': authors_path,
                       'param_key': 'model_state_dict'}],
           'datasets': {'set': {'dataroot_gt': gt, 'dataroot_lq': lq}},
           'metrics': {'lpips': None, 'dists': None, 'niqe': None}}
    table = run_evaluation(opt, progress=False)
    assert table.cells['authors'] == table.cells['BasicSR']
    assert all(isinstance(value, float) for value in table.cells['authors'].values())


def test_options_build_the_papers_networks():
    opt = load_options(AUTHORS_OPTIONS)
    assert (opt['protocol'], opt['scale'], opt.get('crop_border')) == ('sr', 4, None)  # crop: scale, 4 px
    assert list(opt['datasets']) == ['Set5', 'Set14', 'B100', 'Urban100', 'Manga109']
    counts = {}
    for model in opt['models']:
        assert model['param_key'] == 'model_state_dict'
        counts[model['network']['type']] = sum(p.numel() for p in build_network(model['network']).parameters())
    assert counts == PAPER_PARAMETERS


def test_missing_release_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = os.path.join(str(tmp_path), 'experiments', 'pretrained_models', 'EA-Adam-srresnet.pt')
    with pytest.raises(FileNotFoundError, match=f'put the file at {expected}'):
        prepare(load_options(AUTHORS_OPTIONS))

