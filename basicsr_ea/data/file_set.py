"""Write a generated data set (demo data) idempotently: a rerun is a no-op, a different existing set is kept."""
import argparse
import hashlib
import json
import os
import shutil
import sys


def write_file_set(root, files, force=False, after_write=None):
    """Write ``files`` (``{relative path: bytes}``) under ``root`` with a ``manifest.json`` of their sha256.

    Returns 'up to date' when ``root`` already holds exactly this set, 'created' after writing it. A different or
    incomplete existing set raises FileExistsError unless ``force``, which replaces it. ``after_write(root)`` runs
    once the files are written and before the manifest is (e.g. to pack LMDBs), so an interrupted run is redone.
    """
    manifest = {path: hashlib.sha256(data).hexdigest() for path, data in sorted(files.items())}
    manifest_path = os.path.join(root, 'manifest.json')
    if os.path.exists(root) and os.listdir(root):
        existing = None
        if os.path.isfile(manifest_path):
            with open(manifest_path) as f:
                existing = json.load(f)
        if existing == manifest and all(os.path.isfile(os.path.join(root, path)) for path in files):
            return 'up to date'
        if not force:
            raise FileExistsError(f'{root} holds a different or incomplete data set; pass --force to replace it.')
        shutil.rmtree(root)
    for path, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
        with open(os.path.join(root, path), 'wb') as f:
            f.write(data)
    if after_write is not None:
        after_write(root)
    with open(manifest_path, 'w') as f:
        json.dump(manifest, f, indent=1)
    return 'created'


def file_set_main(description, default_root, make, argv=None):
    """The command line of a demo-data script: ``[--root ROOT] [--force]``; ``make(root, force)`` builds the set."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--root', default=default_root, help='output folder')
    parser.add_argument('--force', action='store_true', help='replace a different existing data set')
    args = parser.parse_args(argv)
    try:
        status = make(args.root, args.force)
    except FileExistsError as err:
        sys.exit(f'error: {err}')
    print(f'{args.root}: {status}')
