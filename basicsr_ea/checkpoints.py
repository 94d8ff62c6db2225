"""Every checkpoint this project reads or writes, in one place.

Reading: ``torch.load(weights_only=True)`` only, with errors that name the file (missing, empty, truncated, not a
PyTorch file, not weights-only, NaN or Inf weights). Network weights come in the layouts users have: BasicSR's
``{'params': ..., 'params_ema': ...}``, a bare state dict, the EA-Adam authors' ``{'model_state_dict': ...}``, each
with or without DataParallel's ``module.`` prefix. Writing: atomic (``files.write_atomic``). Population members are
``net_{g,d}_{i}_{iter}.pth`` (BasicSR's ``net_g_{iter}.pth`` with the individual's index), the members of
the EA's archive ``net_g_archive_{k}_{iter}.pth``.
"""
import io
import logging
import os
import pickle
import re

import torch

from basicsr_ea.files import write_atomic

# Where a checkpoint keeps a network's weights when it is not BasicSR's ``param_key``: the EA-Adam authors' release.
FOREIGN_PARAM_KEYS = ('model_state_dict', )
POPULATION_FILE = re.compile(r'net_(?P<label>g_archive|[gd])_(?P<index>\d+)_(?P<iter>latest|\d+)\.pth')
ARCHIVE = 'g_archive'  # the label of the EA's archive members, net_g_archive_{k}_{iter}.pth
# The file label of each kind of EA-Adam member the options name (fusion's experts_from, evaluation's members).
MEMBER_LABELS = {'population': 'g', 'archive': ARCHIVE}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used as it is; the message names the file."""


def save_checkpoint(obj, path):
    """``torch.save`` written atomically: a crash or a full disk keeps the previous file, and says so."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getbuffer())


def read_checkpoint(path, map_location='cpu'):
    """The object saved in ``path``, loaded with ``weights_only=True``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} not found.')
    if os.path.getsize(path) == 0:
        raise CheckpointError(f'{path} is empty (0 bytes): an interrupted copy or write?')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f'{path} is not a weights-only checkpoint (it holds pickled objects other than '
                              'tensors and plain containers); it is not loaded.') from err
    except (RuntimeError, OSError, EOFError, ValueError, KeyError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f'{path} cannot be read: truncated or not a PyTorch checkpoint ({reason}).') from err


def strip_module_prefix(state):
    """DataParallel / DDP save their network's keys under ``module.``; the bare network has none."""
    return {key.removeprefix('module.'): value for key, value in state.items()}


def check_finite(state, path):
    """A network with NaN or Inf weights restores nothing: name the file and the first such tensor."""
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f'{path}: tensor {key} holds NaN or Inf values; the checkpoint is not usable.')
    return state


def network_state(checkpoint, path, param_key='params'):
    """The network weights in ``checkpoint`` (read from ``path``): its ``param_key`` entry, BasicSR's ``params``
    when ``params_ema`` is asked for and absent (as BasicSR does), the authors' ``model_state_dict``, or the
    checkpoint itself when it is a bare state dict (or ``param_key`` is None); prefixes stripped, values finite."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{path} holds a {type(checkpoint).__name__}, not network weights.')
    candidates = [param_key] if param_key is not None else []
    candidates += ['params'] if param_key == 'params_ema' else []
    candidates += list(FOREIGN_PARAM_KEYS)
    found = next((key for key in candidates if key in checkpoint), None)
    if found is not None:
        state = checkpoint[found]
        if found != param_key:
            logging.getLogger('basicsr').info(f'{path}: no {param_key!r}, loading {found!r}.')
    elif all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        state = checkpoint
    else:
        raise CheckpointError(f'{path} has no {param_key!r} weights (it holds {", ".join(map(str, checkpoint))}); '
                              'set param_key (BasicSR: path.param_key_g).')
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f'{path}: {found!r} is not a state dict of tensors.')
    return check_finite(strip_module_prefix(state), path)


def check_fits(state, template, path, arch):
    """Raise unless ``state`` has exactly the keys and shapes of ``template`` (a state dict of the network the
    options build): a checkpoint of another arch or size is an error that says what differs."""
    missing, unexpected = sorted(template.keys() - state.keys()), sorted(state.keys() - template.keys())
    if missing or unexpected:
        raise CheckpointError(f'{path} is not a checkpoint of this {arch}: {len(missing)} keys missing '
                              f'{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}.')
    for key, value in template.items():
        if state[key].shape != value.shape:
            raise CheckpointError(f'{path} does not fit this {arch}: {key} has shape {tuple(state[key].shape)}, '
                                  f'the options give {tuple(value.shape)}.')


def load_network(net, path, param_key='params', strict=True):
    """Load ``path``'s weights into ``net`` (in place; returns it). ``strict=False`` loads the tensors whose name
    and shape match and logs the others, as BasicSR's ``load_network`` does."""
    state = network_state(read_checkpoint(path), path, param_key)
    template = net.state_dict()
    arch = type(net).__name__
    if strict:
        check_fits(state, template, path, arch)
    else:
        skipped = sorted(k for k in state.keys() | template.keys()
                         if k not in state or k not in template or state[k].shape != template[k].shape)
        if skipped:
            logging.getLogger('basicsr').warning(f'{path}: not loaded into {arch} (missing, unexpected or another '
                                                 f'shape): {", ".join(skipped)}')
        state = {k: v for k, v in state.items() if k not in skipped}
    net.load_state_dict(state, strict=strict)
    return net


def build_and_load(network_opt, path, param_key='params', strict=True):
    """The network ``network_opt`` (``{type: ..., ...}``) builds, with the weights of ``path``, on the CPU in eval
    mode: what evaluation, inference and the scripts restore images with."""
    from basicsr.archs import build_network
    return load_network(build_network(network_opt), path, param_key, strict).eval()


def population_file(index, iteration, label='g'):
    """``net_g_{index}_{iteration}.pth``: individual ``index``'s generator (or discriminator, ``label='d'``, or
    archive member, ``label=ARCHIVE``)."""
    return f'net_{label}_{index}_{iteration}.pth'


def parse_population_file(name):
    """``(label, index, iteration)`` of a population member's file name (iteration 'latest' or an int), or None."""
    match = POPULATION_FILE.fullmatch(name)
    if match is None:
        return None
    iteration = match['iter'] if match['iter'] == 'latest' else int(match['iter'])
    return match['label'], int(match['index']), iteration


def population_paths(folder, iteration='latest', label='g'):
    """The files ``net_{label}_{i}_{iteration}.pth`` of ``folder``, ordered by i (numerically: ``net_g_10`` after
    ``net_g_9``), so entry k is individual k; an index missing between them is an error."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'population folder {folder} does not exist.')
    wanted = iteration if iteration == 'latest' else int(iteration)
    found = {}
    for name in os.listdir(folder):
        parsed = parse_population_file(name)
        if parsed is not None and parsed[0] == label and parsed[2] == wanted:
            found[parsed[1]] = os.path.join(folder, name)
    if not found:
        raise FileNotFoundError(f'{folder} holds no {population_file("{i}", iteration, label)}.')
    missing = sorted(set(range(max(found) + 1)) - set(found))
    if missing:
        raise FileNotFoundError(f'{folder}: {population_file("{i}", iteration, label)} of individuals {missing} '
                                'are missing.')
    return [found[i] for i in sorted(found)]
