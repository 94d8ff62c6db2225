"""NSSLoss, the demo's perceptual loss without downloaded weights: NIQE's own normalisation, exact values, finite
gradients (flat images included), and a stable descent towards the ground truth on a tiny problem."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from basicsr.losses import build_loss
from basicsr.metrics import niqe as basicsr_niqe
from scipy.ndimage import convolve

from basicsr_ea.losses.nss_loss import NSSLoss, gaussian_window, mscn, neighbour_products
from basicsr_ea.models.fitness import PerceptualObjective


def textured(seed=0, size=64):
    """A smooth gradient with seeded high-frequency texture, [1, 3, size, size] in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.2, 0.8, size).expand(1, 3, size, size)
    return (ramp + 0.1 * torch.rand(1, 3, size, size, generator=g) - 0.05).clamp(0, 1)


def blurred(img):
    return F.avg_pool2d(F.pad(img, (1, 1, 1, 1), mode='replicate'), 3, stride=1)


def test_window_and_coefficients_are_niqes():
    pris = np.load(os.path.join(os.path.dirname(basicsr_niqe.__file__), 'niqe_pris_params.npz'))
    np.testing.assert_allclose(gaussian_window().numpy(), pris['gaussian_window'], atol=1e-12)
    img = np.random.default_rng(0).random((20, 24)) * 255
    window = pris['gaussian_window']
    mu = convolve(img, window, mode='nearest')
    sigma = np.sqrt(np.abs(convolve(img**2, window, mode='nearest') - mu**2))
    ours, ours_mu = mscn(torch.from_numpy(img)[None, None], gaussian_window())
    np.testing.assert_allclose(ours[0, 0].numpy(), (img - mu) / (sigma + 1), atol=1e-6)
    np.testing.assert_allclose(ours_mu[0, 0].numpy(), mu, atol=1e-9)


def test_neighbour_products_pair_each_coefficient_with_its_neighbour():
    x = torch.arange(12.).reshape(1, 1, 3, 4)
    right, down, down_right, down_left = neighbour_products(x)
    assert torch.equal(right, x[..., :, 1:] * x[..., :, :-1])
    assert torch.equal(down, x[..., 1:, :] * x[..., :-1, :])
    assert torch.equal(down_right, x[..., 1:, 1:] * x[..., :-1, :-1])
    assert torch.equal(down_left, x[..., 1:, :-1] * x[..., :-1, 1:])


def test_zero_exactly_at_the_ground_truth_and_positive_elsewhere():
    loss, gt = build_loss({'type': 'NSSLoss'}), textured()
    assert loss(gt, gt)[0].item() == 0 and loss(gt, gt)[1] is None
    assert loss(blurred(gt), gt)[0].item() > 0


def test_weights_select_and_scale_features():
    gt, sr = textured(0), blurred(textured(0))
    parts = {name: NSSLoss({name: 1.0})(sr, gt)[0] for name in ('mean', 'mscn', 'spread')}
    combined = NSSLoss({'mean': 2.0, 'mscn': 0.5, 'spread': 0.0}, loss_weight=3.0)(sr, gt)[0]
    torch.testing.assert_close(combined, 3 * (2 * parts['mean'] + 0.5 * parts['mscn']))
    with pytest.raises(ValueError, match='unknown features'):
        NSSLoss({'conv5_4': 1.0})


def test_objective_per_patch_matches_the_loss():
    """The EA-Adam model reads the loss through PerceptualObjective: per patch, its mean is the loss's value."""
    loss = NSSLoss()
    gt = torch.cat([textured(0), textured(1)])
    sr = blurred(gt)
    objective = PerceptualObjective(loss)
    per_patch = objective(sr, objective.prepare(gt))
    assert per_patch.shape == (2, )
    torch.testing.assert_close(per_patch.mean(), loss(sr, gt)[0])


def test_gradient_reaches_every_parameter_and_is_finite_on_flat_images():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 3, padding=1))
    flat = torch.full((2, 3, 32, 32), 0.5)
    for gt in (flat, torch.cat([textured(0, 32), textured(1, 32)])):
        net.zero_grad()
        NSSLoss()(net(flat) + flat, gt)[0].backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
                   for p in net.parameters())


def test_descent_from_a_blurred_image_is_stable_and_approaches_the_ground_truth():
    """Adam on the loss alone, from a blurred copy of the GT: the loss falls steadily and the image ends closer to the
    GT than it started (higher PSNR), never leaving [0, 1] far behind."""
    gt = torch.cat([textured(0), textured(1)])
    start = blurred(gt)
    sr = start.clone().requires_grad_(True)
    loss_fn, optimizer = NSSLoss(), torch.optim.Adam([sr], lr=2e-3)
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        loss = loss_fn(sr, gt)[0]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    assert all(later < earlier * 1.05 for earlier, later in zip(losses, losses[1:]))

    def mse(x):
        return ((x.detach() - gt)**2).mean()

    assert mse(sr) < 0.1 * mse(start) and sr.min() > -0.1 and sr.max() < 1.1
