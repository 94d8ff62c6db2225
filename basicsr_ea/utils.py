"""Small helpers shared by the package's subfolders."""
import importlib
import os


def import_modules_with_suffix(package, package_file, suffix):
    """Import every module of ``package`` whose file name ends in ``suffix`` (BasicSR's discovery convention)."""
    folder = os.path.dirname(os.path.abspath(package_file))
    for file_name in sorted(os.listdir(folder)):
        if file_name.endswith(suffix):
            importlib.import_module(f'{package}.{file_name[:-3]}')
