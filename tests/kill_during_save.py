"""Run basicsr_ea/train.py and SIGKILL it in the middle of its ``KILL_AT_SAVE``-th checkpoint write: after the
temporary file is written, before it is renamed into place (what a crash or a preempted job does)."""
import os
import runpy
import signal
import sys

KILL_AT_SAVE = int(os.environ['KILL_AT_SAVE'])
TRAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'basicsr_ea', 'train.py')
_replace, _calls = os.replace, []


def die_before_rename(src, dst, *args, **kwargs):
    if str(dst).endswith(('.pth', '.state')):
        _calls.append(dst)
        if len(_calls) == KILL_AT_SAVE:
            os.kill(os.getpid(), signal.SIGKILL)
    _replace(src, dst, *args, **kwargs)


os.replace = die_before_rename  # basicsr_ea.files.write_atomic renames each finished temporary file into place
sys.argv[0] = TRAIN
runpy.run_path(TRAIN, run_name='__main__')
