"""Synthetic degradations of the all-in-one tasks: the training noise and the demo data set's five corruptions.

Images are float32 HxWxC arrays in [0, 1]. Every random function takes its generator (``np.random.Generator``, or
anything with ``standard_normal``/``random`` such as the ``np.random`` module BasicSR seeds per data-loader worker);
the parameters that name a file (haze airlight and density, blur length and angle) are arguments, not draws.
"""
import cv2
import numpy as np


def add_gaussian_noise(img, sigma, rng):
    """Gaussian noise of std ``sigma`` on the 0-255 scale, rounded and clipped to uint8 levels as a saved noisy image
    would be (PromptIR's noisy inputs are uint8)."""
    noisy = np.clip(np.round(img * 255. + rng.standard_normal(img.shape) * sigma), 0, 255)
    return (noisy / 255.).astype(np.float32)


def line_kernel(length, angle):
    """Normalised straight-line kernel of ``length`` pixels at ``angle`` degrees (0 = horizontal)."""
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.
    centre = ((length - 1) / 2., (length - 1) / 2.)
    kernel = cv2.warpAffine(kernel, cv2.getRotationMatrix2D(centre, angle, 1.), (length, length))
    return kernel / kernel.sum()


def motion_blur(img, length, angle):
    """Blur along a straight camera path, the GoPro-like deblurring input."""
    return cv2.filter2D(img, -1, line_kernel(length, angle), borderType=cv2.BORDER_REFLECT)


def add_rain(img, rng, density, length, angle, brightness):
    """Rain100L-like streaks: sparse random drops smeared into bright lines ``angle`` degrees off vertical, added."""
    drops = (rng.random(img.shape[:2]) < density).astype(np.float32)
    streaks = cv2.filter2D(drops, -1, line_kernel(length, 90. + angle)) * length * brightness
    streaks = cv2.GaussianBlur(streaks, (3, 3), 0)
    return np.clip(img + streaks[..., None], 0, 1).astype(np.float32)


def smooth_depth(shape, rng):
    """Scene depth in [0, 1] for haze: far at the top of the frame (a ground plane seen from eye level) plus
    low-frequency bumps, smooth so the transmission map has no edges of its own."""
    height, width = shape
    ramp = np.repeat(np.linspace(1., 0., height, dtype=np.float32)[:, None], width, axis=1)
    bumps = cv2.resize(rng.random((4, 4)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    depth = 0.7 * ramp + 0.3 * bumps
    return (depth - depth.min()) / (depth.max() - depth.min())


def add_haze(img, depth, airlight, beta):
    """Atmospheric scattering model ``I = J t + A (1 - t)`` with transmission ``t = exp(-beta depth)`` (RESIDE)."""
    transmission = np.exp(-beta * depth)[..., None]
    return (img * transmission + airlight * (1. - transmission)).astype(np.float32)


def low_light(img, gamma, scale, sigma, rng):
    """LOL-like under-exposure: a gamma curve that crushes the shadows, a global gain below 1 and sensor noise."""
    return add_gaussian_noise(scale * img**gamma, sigma, rng)
