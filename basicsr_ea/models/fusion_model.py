"""Population fusion training (Sun et al., TIP 2024, https://arxiv.org/abs/2312.15408, Stage 2): only the routers of
a ``PopulationFusion`` network learn, with BasicSR's SR-GAN losses, against one discriminator.

Options (beside BasicSR's usual keys)::

    network_g: {type: PopulationFusion, backbone: {...}, experts: experiments/<EA-Adam run>, ...}
    network_d: {type: VGGStyleDiscriminator, ...}      # needed with gan_opt only
    path:
      pretrain_network_d: experiments/<EA-Adam run>/models/net_d_{i}_latest.pth   # start from the EA stage's
      pretrain_network_vgg: experiments/pretrained_models/vgg19-dcbb9e9d.pth            # for perceptual_opt
    train:
      optim_g: {type: Adam, lr: 5e-5}
      optim_d: {type: Adam, lr: 1e-4}                    # with gan_opt
      pixel_opt / perceptual_opt / gan_opt               # each optional, as in BasicSR (the paper: 0.1 / 1 / 0.005)
      relativistic_gan: true                             # ESRGAN's relativistic average GAN; false: SRGAN's vanilla
    tile: {tile_size: 256, tile_pad: 32}                 # optional: validate/test tile by tile (basicsr_ea.tiling)
"""
from basicsr.models.esrgan_model import ESRGANModel
from basicsr.models.sr_model import SRModel
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils.registry import MODEL_REGISTRY

from basicsr_ea.compat import RepairedModel, perceptual_weights
from basicsr_ea.models.train_options import FusionTrainOptions
from basicsr_ea.optim import build_optimizer
from basicsr_ea.options import parse
from basicsr_ea.tiling import TiledTestMixin


@MODEL_REGISTRY.register()
class FusionModel(RepairedModel, TiledTestMixin, ESRGANModel):
    """ESRGAN's training (or SRGAN's with ``relativistic_gan: false``, or SRModel's without ``gan_opt``) of the
    fused generator's trainable parameters: the routers. The expert tensors are buffers, so they never reach an
    optimizer and ``net_g`` checkpoints hold only the routers (and the backbone's own buffers)."""

    def init_training_settings(self):
        train_options = parse(FusionTrainOptions, self.opt['train'], 'train')
        self.adversarial = train_options.gan_opt is not None
        self.relativistic = train_options.relativistic_gan
        with perceptual_weights(self.opt):
            if self.adversarial:
                super().init_training_settings()
            else:
                SRModel.init_training_settings(self)

    def setup_optimizers(self):
        """BasicSR pops ``type`` from the options; build through the project's registry on a copy instead."""
        train_opt = self.opt['train']
        trainable = [p for p in self.net_g.parameters() if p.requires_grad]
        self.optimizer_g = build_optimizer(train_opt['optim_g'], trainable)
        self.optimizers = [self.optimizer_g]
        if self.adversarial:
            self.optimizer_d = build_optimizer(train_opt['optim_d'], self.net_d.parameters())
            self.optimizers.append(self.optimizer_d)

    def optimize_parameters(self, current_iter):
        if not self.adversarial:
            SRModel.optimize_parameters(self, current_iter)
        elif self.relativistic:
            super().optimize_parameters(current_iter)
        else:
            SRGANModel.optimize_parameters(self, current_iter)

    def save(self, epoch, current_iter):
        (SRGANModel.save if self.adversarial else SRModel.save)(self, epoch, current_iter)
