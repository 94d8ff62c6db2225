"""Image folder -> LMDB with BasicSR's own writer, so every LMDB the project makes is one BasicSR reads."""
import os

from basicsr.utils.lmdb_util import make_lmdb_from_imgs

from basicsr_ea.image_formats import IMAGE_EXTENSIONS


def folder_to_lmdb(folder, compress_level=1):
    """Write ``<folder>.lmdb`` (keys: file stems, ``meta_info.txt`` included) and return its path."""
    if not os.path.isdir(folder):
        raise ValueError(f'{folder} is not a folder')
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise ValueError(f'{folder} holds no images')
    lmdb_path = folder.rstrip('/') + '.lmdb'
    if os.path.exists(lmdb_path):
        raise FileExistsError(f'{lmdb_path} already exists; remove it to rebuild')
    total = sum(os.path.getsize(os.path.join(folder, n)) for n in names)
    # BasicSR sizes the map from the first image only; size it from all of them, with room for PNG re-encoding.
    make_lmdb_from_imgs(folder, lmdb_path, names, [os.path.splitext(n)[0] for n in names],
                        compress_level=compress_level, map_size=total * 10 + (1 << 24))
    return lmdb_path
