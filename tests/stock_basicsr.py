"""Stock BasicSR in a fresh process, for the tests that show importing the plugin changes nothing of it."""
import os
import sys
import types


def shim_functional_tensor():
    """The one repair stock BasicSR 1.4.2 needs to import on torchvision >= 0.17 (what ``basicsr_ea.compat``
    does on import), written out here so that the 'stock' process imports nothing of the plugin."""
    import torchvision.transforms.functional as functional
    module = types.ModuleType('torchvision.transforms.functional_tensor')
    module.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[module.__name__] = module


def train_srmodel(mode, out, iterations=5):
    """A few iterations of a stock ``SRModel`` (narrow MSRResNet, L1, Adam, MultiStepLR) on seeded random batches,
    with ``import basicsr_ea`` first when ``mode == 'plugin'``; writes the losses, the final weights and the keys of
    the training state it saved to ``out/result.pth``."""
    shim_functional_tensor()
    if mode == 'plugin':
        import basicsr_ea  # noqa: F401
    import torch
    from basicsr.models import build_model
    from basicsr.utils import set_random_seed

    set_random_seed(0)
    os.makedirs(out, exist_ok=True)
    opt = {'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'is_train': True, 'dist': False, 'rank': 0,
           'network_g': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                         'upscale': 4},
           'path': {'pretrain_network_g': None, 'models': out, 'training_states': out},
           'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
                     'scheduler': {'type': 'MultiStepLR', 'milestones': [3], 'gamma': 0.5}, 'total_iter': iterations,
                     'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}}}
    model = build_model(opt)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for it in range(1, iterations + 1):
        model.update_learning_rate(it)
        model.feed_data({'lq': torch.rand(2, 3, 8, 8, generator=generator),
                         'gt': torch.rand(2, 3, 32, 32, generator=generator)})
        model.optimize_parameters(it)
        losses.append(model.log_dict['l_pix'])
    model.save(0, iterations)
    state = torch.load(os.path.join(out, f'{iterations}.state'), weights_only=True)
    torch.save({'losses': losses, 'weights': model.net_g.state_dict(), 'state_keys': sorted(state)},
               os.path.join(out, 'result.pth'))
