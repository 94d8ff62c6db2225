"""Pack image folders into LMDB with BasicSR's own writer, in the layout its datasets read (``meta_info.txt``).

    python scripts/make_lmdb.py datasets/DF2K/HR_sub datasets/DF2K/LR_bicubic_X4_sub [...]

Each folder ``X`` becomes ``X.lmdb``; keys are the file stems, so paired HR/LR folders stay paired.
"""
import argparse
import sys

import basicsr_ea  # noqa: F401  (BasicSR needs the compatibility layer to import)
from basicsr_ea.data.lmdb_util import folder_to_lmdb


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('folders', nargs='+')
    parser.add_argument('--compress_level', type=int, default=1)
    args = parser.parse_args(argv)
    for folder in args.folders:
        try:
            print(folder_to_lmdb(folder, args.compress_level))
        except (ValueError, FileExistsError) as err:
            sys.exit(f'error: {err}')


if __name__ == '__main__':
    main()
