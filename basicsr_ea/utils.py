"""Small helpers shared by the package's subfolders."""
import importlib
import os


def import_modules_with_suffix(package, package_file, suffix):
    """Import every module of ``package`` whose file name ends in ``suffix`` (BasicSR's discovery convention)."""
    folder = os.path.dirname(os.path.abspath(package_file))
    for file_name in sorted(os.listdir(folder)):
        if file_name.endswith(suffix):
            importlib.import_module(f'{package}.{file_name[:-3]}')


def resolve_device(name='auto'):
    """The device of a ``device`` option: ``auto`` (or None) is this process's current GPU when there is one, else
    the CPU; any other value is what torch calls it (``cpu``, ``cuda:1``)."""
    import torch
    if name in (None, 'auto'):
        return torch.device('cuda', torch.cuda.current_device()) if torch.cuda.is_available() else torch.device('cpu')
    return torch.device(name)


def get_rng_states():
    """Python, NumPy and torch RNG states in types ``torch.load(weights_only=True)`` accepts."""
    import random

    import numpy as np
    import torch
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    states = {'python': random.getstate(), 'numpy': (np_kind, torch.from_numpy(np_keys.astype(np.int64)), np_pos,
                                                      np_has_gauss, np_gauss), 'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states):
    import random

    import numpy as np
    import torch
    random.setstate(states['python'])
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = states['numpy']
    np.random.set_state((np_kind, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])
