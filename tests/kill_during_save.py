"""Run basicsr_ea/train.py and SIGKILL it in the middle of its ``KILL_AT_SAVE``-th checkpoint write: after the
temporary file is written, before it is renamed into place (what a crash or a preempted job does)."""
import os
import runpy
import signal
import sys

import torch

KILL_AT_SAVE = int(os.environ['KILL_AT_SAVE'])
TRAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'basicsr_ea', 'train.py')
_save, _calls = torch.save, []


def save_then_die(obj, f, *args, **kwargs):
    _save(obj, f, *args, **kwargs)
    _calls.append(f)
    if len(_calls) == KILL_AT_SAVE:
        os.kill(os.getpid(), signal.SIGKILL)


torch.save = save_then_die
sys.argv[0] = TRAIN
runpy.run_path(TRAIN, run_name='__main__')
