"""basicsr-ea: EA-Adam population training, population fusion and MEASNet as BasicSR components.

Importing the package repairs BasicSR 1.4.2 for current torch (``compat``) and registers every arch, model,
dataset, metric and optimizer of the project in BasicSR's registries.
"""
from basicsr_ea import compat  # noqa: F401  (must come before anything imports basicsr)
from basicsr_ea import archs, data, losses, metrics, models, optim  # noqa: F401,E402

__version__ = '0.1.0'
