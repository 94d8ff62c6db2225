"""No typo anywhere in the shipped option files' schema trains or evaluates with defaults: a misspelt key added to
any mapping this project checks (``train`` of its models, evaluation options, all-in-one datasets) is an error
naming that key's path."""
import glob
import json
import os
import re
from functools import partial

import pytest
from basicsr.utils.registry import ARCH_REGISTRY
from helpers import REPO_ROOT, load_options

from basicsr_ea.data.allinone_dataset import AllInOneTestOptions, AllInOneTrainOptions, dataset_options
from basicsr_ea.evaluation.inputs import EvalOptions, build_metrics
from basicsr_ea.models.fitness import check_objectives_run
from basicsr_ea.models.train_options import EAAdamTrainOptions
from basicsr_ea.options import OptionError, check_buildable, parse
from basicsr_ea.startup import TRAIN_OPTIONS, check_train_losses

TYPO = 'zz_misspelt'
OPTION_FILES = sorted(glob.glob(os.path.join(REPO_ROOT, 'options', '*.yml')))
ALLINONE_DATASETS = {'AllInOneTrainDataset': AllInOneTrainOptions, 'AllInOneTestDataset': AllInOneTestOptions}


def load_unaliased(file):
    """The options of ``file`` with YAML anchors copied, so that a change to one mapping changes no other."""
    return json.loads(json.dumps(load_options(file)))


def mappings(node, path):
    """(path, mapping) of ``node`` and of every mapping inside it, through lists too."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from mappings(value, f'{path}.{key}')
    elif isinstance(node, list):
        for k, value in enumerate(node):
            yield from mappings(value, f'{path}[{k}]')


def check_train(cls, train):
    """What ``startup.check_training_options`` checks of ``train`` without reading a file."""
    options = parse(cls, train, 'train')
    check_train_losses(train)
    if cls is EAAdamTrainOptions:
        check_objectives_run(options.ea.objectives, options.ea.fitness.patch_size)


def check_evaluation(opt):
    """What ``evaluation.runner.prepare`` checks before it reads a checkpoint or a folder."""
    options = parse(EvalOptions, opt, 'options')
    build_metrics(options.protocol, 0, options.metrics)


def checked_sections(opt):
    """(section path, section, check, the path its errors name) for each part of ``opt`` this project checks."""
    for key in ('network_g', 'network_d'):
        if key in opt:
            yield key, opt[key], partial(check_buildable, ARCH_REGISTRY, where=key), key
    if opt.get('model_type') in TRAIN_OPTIONS and 'train' in opt:
        yield 'train', opt['train'], partial(check_train, TRAIN_OPTIONS[opt['model_type']]), 'train'
    if 'models' in opt and 'protocol' in opt:
        yield 'options', opt, check_evaluation, 'options'
    for phase, dataset in (opt.get('datasets') or {}).items():
        if dataset.get('type') in ALLINONE_DATASETS:
            dataset['phase'] = phase.split('_')[0]  # as BasicSR's parse_options sets it
            yield (f'datasets.{phase}', dataset, partial(dataset_options, ALLINONE_DATASETS[dataset['type']]),
                   f'datasets.{dataset["phase"]} ({dataset.get("name")})')


def typo_cases():
    for file in OPTION_FILES:
        for section_path, section, check, label in checked_sections(load_unaliased(file)):
            for path, _ in mappings(section, section_path):
                yield pytest.param(file, section_path, path, check, label + path[len(section_path):],
                                   id=f'{os.path.basename(file)}:{path[len(section_path):] or section_path}')


CASES = list(typo_cases())


def test_every_shipped_option_file_with_a_checked_section_is_swept():
    swept = {os.path.basename(case.values[0]) for case in CASES}
    assert {'train_EAAdam_x4.yml', 'train_EAAdam_demo.yml', 'train_Fusion_x4.yml', 'train_MEASNet_3task.yml',
            'eval_demo.yml', 'test_MEASNet_3task.yml'} <= swept
    assert len(CASES) > 40


@pytest.mark.parametrize('file, section_path, path, check, named', CASES)
def test_a_misspelt_key_in_any_checked_mapping_is_an_error_naming_it(file, section_path, path, check, named):
    target = next(s for p, s, _, _ in checked_sections(load_unaliased(file)) if p == section_path)
    dict(mappings(target, section_path))[path][TYPO] = 1
    with pytest.raises(OptionError, match=re.escape(f'{named}.{TYPO}')):
        check(target)


def test_an_unknown_evaluation_dataset_type_is_an_option_error():
    opt = load_unaliased(os.path.join(REPO_ROOT, 'options', 'eval_demo.yml'))
    opt['datasets']['demo_val'] = {'type': 'PairedImageDatset', 'dataroot_gt': 'gt', 'dataroot_lq': 'lq'}
    with pytest.raises(OptionError, match=r"options\.datasets\.demo_val\.type: no 'PairedImageDatset'"):
        check_evaluation(opt)
