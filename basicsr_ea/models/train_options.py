"""The ``train`` options of this project's models, typed: BasicSR's keys that each model's training reads, plus the
project's own (``population_size``, ``relativistic_gan``, ``aux_weight``, ``ea``), so that a typo at any level
(``train.population_sise``, ``train.ea.fitness.patch_sise``) is an error instead of a default."""
from dataclasses import dataclass, field

from basicsr_ea.options import OptionError, check_io_backend


def positive(name, value):
    if value <= 0:
        raise OptionError(f'{name}: must be positive, got {value}')


@dataclass(frozen=True, kw_only=True)
class BasicSRTrainOptions:
    """What BasicSR's pipeline and ``BaseModel`` read from ``train`` for every model."""
    total_iter: int
    scheduler: dict
    optim_g: dict
    warmup_iter: int = -1
    pixel_opt: dict | None = None
    perceptual_opt: dict | None = None


@dataclass(frozen=True)
class FitnessOptions:
    """``train.ea.fitness``: the first ``num_images`` pairs (sorted by name) of the folders or LMDBs, cut on a grid
    of ``patch_size`` GT pixels, at most ``max_patches_per_image`` each."""
    dataroot_gt: str
    dataroot_lq: str
    io_backend: dict = field(default_factory=lambda: {'type': 'disk'})
    filename_tmpl: str = '{}'
    num_images: int = 16
    patch_size: int = 128
    max_patches_per_image: int = 50

    def __post_init__(self):
        check_io_backend(self.io_backend)
        for name in ('num_images', 'patch_size', 'max_patches_per_image'):
            positive(name, getattr(self, name))


@dataclass(frozen=True)
class EAOptions:
    """``train.ea``: an EA phase every ``interval`` iterations (0: none, the fixed-preference Adam baseline) of
    ``generations`` MOEA/D generations, children evaluated ``batch_size`` patches at a time. One child replaces at
    most ``max_replacements`` neighbours (None: any number, as the authors' loop; 1 kept the demo's population
    distinct, ``benchmarks/ea_replacement_limit.py``); an archive of up to ``archive_size`` non-dominated
    individuals (0: none) keeps every front point the population loses. ``channels_last``: children evaluated in that
    memory layout (faster; off for an arch that cannot take it). ``nnpack``: their wide 3x3 convolutions on NNPACK's
    fast kernels where the CPU build has them (``basicsr_ea/models/nnpack_conv.py``; no effect on a GPU)."""
    interval: int
    objectives: list[dict]
    fitness: FitnessOptions
    generations: int = 200
    batch_size: int = 16
    max_replacements: int | None = 1
    archive_size: int = 10
    channels_last: bool = True
    nnpack: bool = True

    def __post_init__(self):
        if self.interval < 0:
            raise OptionError(f'interval: must be >= 0 (0: no EA phase), got {self.interval}')
        positive('generations', self.generations)
        positive('batch_size', self.batch_size)
        if self.max_replacements is not None:
            positive('max_replacements', self.max_replacements)
        if self.archive_size < 0 or self.archive_size == 1:
            raise OptionError(f'archive_size: must be 0 (no archive) or >= 2 (room for both extremes), got '
                              f'{self.archive_size}')
        if self.archive_size and len(self.objectives) != 2:
            raise OptionError(f'archive_size: the archive prunes by two-objective hypervolume; with '
                              f'{len(self.objectives)} objectives set archive_size: 0')
        for k, objective in enumerate(self.objectives):
            if not isinstance(objective, dict) or 'type' not in objective:
                raise OptionError(f'objectives[{k}]: expected {{type: l1 | perceptual | psnr | ssim | niqe, ...}}, '
                                  f'got {objective!r}')


@dataclass(frozen=True, kw_only=True)
class EAAdamTrainOptions(BasicSRTrainOptions):
    """``train`` of ``EAAdamModel``: L1 is the distortion side, the perceptual and GAN losses the perception side."""
    pixel_opt: dict
    optim_d: dict
    ea: EAOptions
    population_size: int = 5
    gan_opt: dict | None = None
    relativistic_gan: bool = True

    def __post_init__(self):
        if self.population_size < 2:
            raise OptionError(f'population_size: EA-Adam needs a population of at least 2, got {self.population_size}')
        if self.perceptual_opt is None and self.gan_opt is None:
            raise OptionError('perceptual_opt: EA-Adam needs a perception side: train.perceptual_opt and/or '
                              'train.gan_opt')


@dataclass(frozen=True, kw_only=True)
class FusionTrainOptions(BasicSRTrainOptions):
    """``train`` of ``FusionModel``: BasicSR's ESRGAN/SRGAN keys, and which of the two GANs."""
    optim_d: dict | None = None
    gan_opt: dict | None = None
    ema_decay: float = 0
    net_d_iters: int = 1
    net_d_init_iters: int = 0
    relativistic_gan: bool = True

    def __post_init__(self):
        if self.gan_opt is not None and self.optim_d is None:
            raise OptionError('optim_d: required with gan_opt (it trains the discriminator)')


@dataclass(frozen=True, kw_only=True)
class AllInOneTrainOptions(BasicSRTrainOptions):
    """``train`` of ``AllInOneModel``: BasicSR's SRModel keys and the weight of the arch's auxiliary loss."""
    ema_decay: float = 0
    aux_weight: float = 0.001
