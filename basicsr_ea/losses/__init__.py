"""Imports every `*_loss.py` of this folder so its classes register in BasicSR's registry."""
from basicsr_ea.utils import import_modules_with_suffix

import_modules_with_suffix(__name__, __file__, '_loss.py')
