"""Every file this project writes (checkpoints, training states, images, tables, plots) goes through ``write_atomic``:
nothing a user owns is left truncated, and a failed write says which file and why."""
import errno
import os

# Write errors whose cause a user can act on, in their words.
WRITE_ERRORS = {
    errno.ENOSPC: 'the disk is full (no space left on device)',
    errno.EDQUOT: 'the disk quota is exceeded',
    errno.EROFS: 'the file system is read-only',
    errno.EACCES: 'permission denied',
}


def write_atomic(path, data):
    """Write ``data`` (bytes) to ``path`` through a temporary file in the same folder, flushed to disk and renamed
    over ``path``: a crash, a kill or a full disk leaves the previous file (or none), never a truncated one. The
    written size is checked. A failed write raises OSError naming ``path`` and the cause."""
    tmp_path = f'{path}.tmp{os.getpid()}'
    try:
        with open(tmp_path, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as err:
        cause = WRITE_ERRORS.get(err.errno, err.strerror or str(err))
        kept = ' (the previous file is kept)' if os.path.exists(path) else ''
        raise OSError(err.errno, f'could not write {path}: {cause}{kept}') from err
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
    if os.path.getsize(path) != len(data):
        raise OSError(errno.EIO, f'{path} holds {os.path.getsize(path)} bytes after writing {len(data)}')


def write_text_atomic(path, text):
    write_atomic(path, text.encode('utf-8'))
