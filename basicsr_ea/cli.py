"""What this project's command-line entry points share: a user's mistake (an option, a file, a full disk) is one
line naming it and a non-zero exit; ``--debug`` keeps the traceback."""
import os.path as osp
import sys

import torch
import yaml

from basicsr_ea.compat import PipelineRepairs

# BasicSR's pipelines put experiments/, results/ and tb_logger/ under the root they are given: this repository's.
REPO_ROOT = osp.abspath(osp.join(__file__, osp.pardir, osp.pardir))

# Errors whose message says what to fix; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, KeyError, OSError, yaml.YAMLError, torch.OutOfMemoryError)


def run(work, argv=None):
    """``work()``, with the errors of ``USER_ERRORS`` as one line and exit status 1 unless ``argv`` (default
    ``sys.argv``) has ``--debug``."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return work()
    except USER_ERRORS as err:
        if '--debug' in argv:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        if isinstance(err, torch.OutOfMemoryError):
            message = f'out of memory: {message.splitlines()[0]} Restore tile by tile (tile option), or lower the batch.'
        sys.exit(f'error: {message} (--debug shows the traceback)')


def run_pipeline(pipeline, check_options):
    """BasicSR's ``pipeline(root)`` (``train_pipeline``, ``test_pipeline``) under ``run``: BasicSR 1.4.2's repairs in
    place for its duration and ``check_options(opt)`` before any folder is made or image read.

    BasicSR never destroys its process group; a gloo process that exits with one alive can abort in its teardown
    ("terminate called without an active exception", pytorch/pytorch#190489) after its work is saved, failing the
    launch. So it is destroyed after a run that succeeded (after a failure the other ranks may still be in a
    collective, and destroying would hang)."""
    def work():
        with PipelineRepairs(check_options=check_options):
            pipeline(REPO_ROOT)
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    run(work)
