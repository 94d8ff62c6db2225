"""What this project's command-line entry points share: a user's mistake (an option, a file, a full disk) is one
line naming it and a non-zero exit; ``--debug`` keeps the traceback."""
import sys

import torch
import yaml

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
