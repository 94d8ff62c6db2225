"""EA-Adam (Sun et al., TIP 2024, https://arxiv.org/abs/2312.15408): a population of SR generators, each trained by
Adam on its own preference between distortion (L1) and perception (perceptual + GAN), recombined every ``interval``
iterations by MOEA/D in weight space so the population spreads along the perception-distortion front.

Options (beside BasicSR's usual keys)::

    train:
      population_size: 5
      optim_g: {type: EAAdam, lr: 1e-4, frozen: [0], seed: 0, ...}   # see basicsr_ea.optim.ea_adam
      optim_d: {type: Adam, lr: 1e-4}
      pixel_opt / perceptual_opt / gan_opt       # BasicSR losses; L1 is the distortion side, the rest perception
      relativistic_gan: true                     # ESRGAN's relativistic average GAN (false: vanilla, SRGAN)
      ea: {interval, generations, batch_size, objectives: [{type: l1}, {type: perceptual}], fitness: {...},
           max_replacements: 1, archive_size: 10}

``ea.interval: 0`` turns the evolutionary phase off: P independent Adam runs with the same preferences, the
fixed-weight baseline the paper compares EA-Adam against, through the same code path.

Where this loop differs from the authors' (``train_EA-Adam_srresnet.py`` and ``EA_operator/`` of their release), and
why; the preferences, neighbourhoods, SBX (0.9, eta 20, one spread factor per tensor, mate from B(i) or with 0.3 from
everyone), mutation (0.2, then 0.02 per element, N(0, 0.03^2), conv/linear weights only), Tchebycheff decomposition
with ideal and nadir widened by every child, the anchor individual 0 (never trained, never replaced, but it has
children), the gradient mixing and the reset of Adam's moments after each phase are theirs:

- one child replaces at most ``max_replacements`` neighbours (default 1, MOEA/D-DE's ``nr``), tried in a random order;
  theirs replaces every neighbour it improves, which can leave the non-frozen individuals identical (measured on the
  demo, ``benchmarks/ea_replacement_limit.py``). ``max_replacements: ~`` is their rule;
- an archive of up to ``archive_size`` non-dominated individuals (MOEA/D's external population) keeps the front
  points the population loses; it is saved (``net_g_archive_{k}_{iter}.pth``) and can serve as fusion experts.
  Theirs keeps none (``archive_size: 0``);
- a child equal to its parent is neither evaluated nor allowed to replace: theirs re-evaluates it, and a copy
  replacing a neighbour only duplicates the parent;
- the child keeps its own biases (their mutation reverts them to the parent's); the fitness set is chosen by options
  in a sorted order (theirs: the first 16 of ``os.listdir``); any metric may be an objective, by default L1 and
  the perceptual loss as theirs; the GT side of the fitness losses is computed once per phase; nothing assumes CUDA;
- schedule and sizes are options: their SRResNet run (P 5, lr 1e-5, batch 16, patch 128, 10 Adam epochs then one
  EA phase of 200 generations, 250 epochs) is ``options/train_EAAdam_SRResNet_x4.yml``; the demo
  (``options/train_EAAdam_demo.yml``: P 4, narrow nets, NSSLoss and GAN for perception, no VGG) is not theirs;
- the GAN is ESRGAN's relativistic average one by default (``relativistic_gan: false``: vanilla, as their SRResNet).
"""
import logging
import os
from collections import OrderedDict

import torch
import torch.distributed as dist
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.metrics import calculate_metric
from basicsr.models.base_model import BaseModel
from basicsr.utils import get_root_logger, tensor2img
from basicsr.utils.registry import MODEL_REGISTRY
from torch import nn

from basicsr_ea.archs.arch_util import size_multiple
from basicsr_ea.checkpoints import ARCHIVE, network_state, parse_population_file, population_file, read_checkpoint
from basicsr_ea.compat import RepairedModel, perceptual_weights
from basicsr_ea.evolution import Archive
from basicsr_ea.files import write_text_atomic
from basicsr_ea.models.ea_report import normalized_hypervolumes, objectives_table, save_front_plot
from basicsr_ea.models.fitness import FitnessEvaluator, PerceptualObjective, build_objective, load_fitness_patches
from basicsr_ea.models.train_options import EAAdamTrainOptions
from basicsr_ea.optim import build_optimizer
from basicsr_ea.options import OptionError, parse
from basicsr_ea.optim.ea_adam import EAAdam
from basicsr_ea.tiling import parse_tile, restore

def broadcast_from_rank0(module):
    """Ranks seed their RNGs differently (BasicSR adds the rank): start every rank from rank 0's weights."""
    if dist.is_initialized():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def check_identical_across_ranks(nets):
    """Raise if the ranks' populations differ (they must, after identical EA decisions); returns the world size."""
    checksums = torch.stack([torch.cat([p.detach().double().reshape(-1) for p in net.parameters()]).sum()
                             for net in nets])
    gathered = [torch.empty_like(checksums) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksums)
    if any(not torch.equal(gathered[0], other) for other in gathered[1:]):
        raise RuntimeError(f'the population differs between ranks after the EA phase: {gathered}')
    return len(gathered)


def average_across_ranks(tensors):
    """Mean of each tensor over the processes, in place: the gradients of one global batch."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        for tensor, chunk in zip(tensors, flat.split([t.numel() for t in tensors])):
            tensor.copy_(chunk.view_as(tensor))
    return tensors


@MODEL_REGISTRY.register()
class EAAdamModel(RepairedModel, BaseModel):
    """P generators of any registered arch (``network_g``), one discriminator each (``network_d``)."""

    def __init__(self, opt):
        super().__init__(opt)
        if self.is_train:
            self.train_options = parse(EAAdamTrainOptions, opt['train'], 'train')
            self.population_size = self.train_options.population_size
        else:
            self.population_size = opt['population_size']
            if not isinstance(self.population_size, int) or self.population_size < 2:
                raise OptionError(f'population_size: EA-Adam needs a population of at least 2, got '
                                  f'{self.population_size!r}')
        self.size_multiple = size_multiple(opt['network_g'])
        self.tile = parse_tile(opt.get('tile'), self.size_multiple)
        self.net_g = nn.ModuleList(build_network(opt['network_g']) for _ in range(self.population_size)).to(self.device)
        self.print_network(self.net_g[0])
        if not opt['path'].get('resume_state'):
            self._load_population(opt['path'].get('pretrain_network_g'))
        broadcast_from_rank0(self.net_g)
        if self.is_train:
            self.init_training_settings()

    def _load_population(self, path):
        """One PSNR-oriented checkpoint for all individuals (the paper's start), or one per individual: a path with
        ``{i}`` in it (e.g. ``experiments/X/models/net_g_{i}_latest.pth``)."""
        if path is None:
            return
        strict = self.opt['path'].get('strict_load_g', True)
        for i, net in enumerate(self.net_g):
            individual_path = path.format(i=i)
            if not os.path.isfile(individual_path):
                raise FileNotFoundError(f'generator checkpoint for individual {i} not found: {individual_path}')
            self.load_network(net, individual_path, strict, self.opt['path'].get('param_key_g', 'params'))

    def init_training_settings(self):
        train_opt = self.opt['train']
        self.net_d = nn.ModuleList(build_network(self.opt['network_d'])
                                   for _ in range(self.population_size)).to(self.device)
        broadcast_from_rank0(self.net_d)
        self.cri_pix = build_loss(train_opt['pixel_opt']).to(self.device)
        with perceptual_weights(self.opt):
            self.cri_perceptual = build_loss(train_opt['perceptual_opt']).to(self.device) \
                if train_opt.get('perceptual_opt') else None
        self.perceptual = PerceptualObjective(self.cri_perceptual) if self.cri_perceptual is not None else None
        self.cri_gan = build_loss(train_opt['gan_opt']).to(self.device) if train_opt.get('gan_opt') else None
        self.relativistic = self.train_options.relativistic_gan
        self.g_params = [list(net.parameters()) for net in self.net_g]
        self.optimizer_g = build_optimizer(train_opt['optim_g'], [{'params': p} for p in self.g_params])
        if not isinstance(self.optimizer_g, EAAdam):
            raise OptionError('train.optim_g.type: must be an EA optimizer (EAAdam) over the population')
        self.optimizer_d = build_optimizer(train_opt['optim_d'], [{'params': net.parameters()} for net in self.net_d])
        self.optimizers = [self.optimizer_g, self.optimizer_d]
        self.setup_schedulers()
        self._init_ea(self.train_options.ea)
        self.net_g.train()
        self.net_d.train()

    def _init_ea(self, ea_opt):
        self.ea_opt = ea_opt
        self.objective_names = [o['type'] for o in ea_opt.objectives]
        if len(self.objective_names) != self.optimizer_g.ref_dirs.shape[1]:
            raise ValueError(f'{len(self.objective_names)} EA objectives for preferences over '
                             f'{self.optimizer_g.ref_dirs.shape[1]}')
        self.objectives = [build_objective(o, self.perceptual, f'train.ea.objectives[{k}]')
                           for k, o in enumerate(ea_opt.objectives)]
        self.fitness_lq, self.fitness_gt = load_fitness_patches(ea_opt.fitness, self.opt['scale'])
        if self.fitness_lq.shape[0] < self.population_size:
            raise ValueError(f'EA fitness set has {self.fitness_lq.shape[0]} patches, fewer than the population '
                             f'({self.population_size}): add images or lower patch_size')
        self.scratch_net = build_network(self.opt['network_g']).to(self.device).eval()
        self.archive = Archive(ea_opt.archive_size) if ea_opt.archive_size else None
        self.hypervolume = None
        self.ea_dir = os.path.join(self.opt['path']['experiments_root'], 'ea')
        os.makedirs(self.ea_dir, exist_ok=True)

    def feed_data(self, data):
        self.lq = data['lq'].to(self.device)
        if 'gt' in data:
            self.gt = data['gt'].to(self.device)

    def _gan_losses(self, real_pred, fake_pred):
        """Generator and discriminator GAN losses from one pair of discriminator outputs (ESRGAN's relativistic
        average GAN, or vanilla). The discriminator's weights do not change between the two updates, so the outputs
        BasicSR's ESRGANModel computes twice are computed once here."""
        if self.relativistic:
            real_mean, fake_mean = real_pred.detach().mean(), fake_pred.detach().mean()
            l_g_gan = (self.cri_gan(real_pred.detach() - fake_pred.mean(), False, is_disc=False) +
                       self.cri_gan(fake_pred - real_mean, True, is_disc=False)) / 2
            l_d_real = self.cri_gan(real_pred - fake_mean, True, is_disc=True) * 0.5
            l_d_fake = self.cri_gan(fake_pred - real_mean, False, is_disc=True) * 0.5
        else:
            l_g_gan = self.cri_gan(fake_pred, True, is_disc=False)
            l_d_real = self.cri_gan(real_pred, True, is_disc=True)
            l_d_fake = self.cri_gan(fake_pred, False, is_disc=True)
        return l_g_gan, l_d_real, l_d_fake

    def _optimize_individual(self, i, gt_features):
        """Per-objective gradients of individual i, normalised and mixed by its preference, and its discriminator's
        gradients; returns the losses and False (nothing written) if a loss or gradient is non-finite."""
        sr = self.net_g[i](self.lq)
        losses = {'l_pix': self.cri_pix(sr, self.gt)}
        if self.perceptual is not None:
            losses['l_percep'] = self.perceptual(sr, gt_features).mean()
        if self.cri_gan is not None:
            losses['l_g_gan'], losses['l_d_real'], losses['l_d_fake'] = self._gan_losses(
                self.net_d[i](self.gt), self.net_d[i](sr))
        l_perception = sum(v for k, v in losses.items() if k in ('l_percep', 'l_g_gan'))
        if not torch.isfinite(torch.stack(list(losses.values()))).all():
            return losses, False
        grads_d = torch.autograd.grad(losses['l_pix'], self.g_params[i], retain_graph=True)
        grads_p = torch.autograd.grad(l_perception, self.g_params[i], retain_graph=self.cri_gan is not None)
        finite = self.optimizer_g.set_mixed_gradients(i, [average_across_ranks(list(grads_d)),
                                                          average_across_ranks(list(grads_p))])
        if self.cri_gan is not None and finite:
            d_params = list(self.net_d[i].parameters())
            # Only the discriminator's weights are asked for: nothing flows back into the generator.
            d_grads = torch.autograd.grad(losses['l_d_real'] + losses['l_d_fake'], d_params)
            for p, grad in zip(d_params, average_across_ranks(list(d_grads))):
                p.grad = grad
        return losses, finite

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad(set_to_none=True)
        self.optimizer_d.zero_grad(set_to_none=True)
        loss_dict = OrderedDict()
        gt_features = self.perceptual.prepare(self.gt) if self.perceptual is not None else None
        for i in range(self.population_size):
            if i in self.optimizer_g.frozen:
                continue
            losses, finite = self._optimize_individual(i, gt_features)
            if not finite:
                get_root_logger().warning(f'iter {current_iter}: individual {i} has a non-finite loss or gradient '
                                          '(skipped: it keeps its last good weights)')
            loss_dict.update((f'{k}_{i}', v.detach()) for k, v in losses.items())
        self.optimizer_g.step()
        if self.cri_gan is not None:
            self.optimizer_d.step()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ea_opt.interval > 0 and current_iter % self.ea_opt.interval == 0:
            self.run_ea_phase(current_iter)
        if self.hypervolume is not None:
            self.log_dict['ea_hypervolume'] = self.hypervolume

    def run_ea_phase(self, current_iter):
        """MOEA/D in weight space; writes the objectives table, hypervolumes and the front plot of this phase."""
        evaluator = FitnessEvaluator(self.objectives, self.fitness_lq, self.fitness_gt, self.scratch_net,
                                     self.ea_opt.batch_size, self.ea_opt.channels_last, self.ea_opt.nnpack)
        archive_before = self.archive.F.clone() if self.archive is not None else None
        report = self.optimizer_g.evolve(evaluator, self.ea_opt.generations, self.ea_opt.max_replacements,
                                         self.archive)
        signs = evaluator.signs
        table = objectives_table(self.objective_names, report['objectives_before'], report['objectives'], signs)
        lines = [f'EA phase at iter {current_iter}: {report["generations"]} generations, '
                 f'{report["replacements"]} replacements (at most {self.ea_opt.max_replacements} per child)', table,
                 f'distinct individuals: before {report["distinct_before"]}, after {report["distinct"]} '
                 f'of {self.population_size}']
        if len(self.objective_names) == 2:
            fronts = [report['objectives_before'], report['objectives']]
            fronts += [archive_before, self.archive.F] if self.archive is not None else []
            hv_before, hv_after, *hv_archive = normalized_hypervolumes(*fronts)
            lines.append(f'hypervolume (normalised jointly, ref 1.1): population before {hv_before:.4f}, after '
                         f'{hv_after:.4f}')
            if self.archive is not None:
                lines.append(f'archive: {len(archive_before)} -> {len(self.archive)} members, hypervolume before '
                             f'{hv_archive[0]:.4f}, after {hv_archive[1]:.4f}')
        if dist.is_initialized():
            lines.append(f'population identical on all {check_identical_across_ranks(self.net_g)} ranks')
        self.last_ea_report = dict(report, table=table)
        if len(self.objective_names) == 2:
            self.hypervolume = hv_after
        get_root_logger().info('\n'.join(lines))
        if self.opt['rank'] != 0:
            return
        write_text_atomic(os.path.join(self.ea_dir, f'objectives_{current_iter}.md'), '\n\n'.join(lines) + '\n')
        if len(self.objective_names) == 2:
            save_front_plot(os.path.join(self.ea_dir, f'front_{current_iter}.png'), self.objective_names,
                            report['objectives_before'], report['objectives'], signs, f'EA phase, iter {current_iter}')

    def save(self, epoch, current_iter):
        for i in range(self.population_size):
            self.save_network(self.net_g[i], f'net_g_{i}', current_iter)
            self.save_network(self.net_d[i], f'net_d_{i}', current_iter)
        if self.archive is not None:
            self._save_archive(current_iter)
        self.save_training_state(epoch, current_iter)

    @torch.no_grad()
    def _save_archive(self, current_iter):
        """Member k as a plain generator checkpoint ``net_g_archive_{k}_{iter}.pth``; for ``latest``, members left
        from a larger archive are removed, so the folder holds this archive only."""
        self.scratch_net.load_state_dict(self.net_g[0].state_dict())  # buffers; the parameters come next
        for k, genome in enumerate(self.archive.states):
            torch._foreach_copy_(list(self.scratch_net.parameters()), list(genome.values()))
            self.save_network(self.scratch_net, f'net_{ARCHIVE}_{k}', current_iter)
        if current_iter == -1 and self.opt['rank'] == 0:
            models = self.opt['path']['models']
            for name in os.listdir(models):
                parsed = parse_population_file(name)
                if parsed is not None and parsed[0] == ARCHIVE and parsed[2] == 'latest' and \
                        parsed[1] >= len(self.archive):
                    os.remove(os.path.join(models, name))

    def training_state(self, epoch, current_iter):
        """The archive's objectives beside the optimizers (its members are checkpoints, see ``_save_archive``)."""
        state = super().training_state(epoch, current_iter)
        if self.archive is not None:
            state['ea_archive'] = self.archive.F.clone()
        return state

    def _resume_archive(self, resume_state):
        models, it = self.opt['path']['models'], resume_state['iter']
        F = resume_state.get('ea_archive')
        if F is None:
            get_root_logger().warning('resume: the training state holds no EA archive (saved before it existed); '
                                      'the archive starts empty')
            return
        names = [name for name, _ in self.scratch_net.named_parameters()]
        states = []
        for k in range(len(F)):
            path = os.path.join(models, population_file(k, it, ARCHIVE))
            state = network_state(read_checkpoint(path, self.device), path)
            states.append({str(n): state[name] for n, name in enumerate(names)})
        self.archive.load(states, F)

    def resume_training(self, resume_state):
        """Population weights from ``net_g_{i}_{iter}.pth``; optimizers (EA state included) and schedulers after."""
        models, it = self.opt['path']['models'], resume_state['iter']
        extra = os.path.join(models, population_file(self.population_size, it))
        if os.path.exists(extra):
            raise ValueError(f'the checkpoint at iter {it} holds more individuals than population_size='
                             f'{self.population_size} ({extra} exists)')
        for label, nets in (('g', self.net_g), ('d', self.net_d)):
            for i, net in enumerate(nets):
                path = os.path.join(models, population_file(i, it, label))
                if not os.path.isfile(path):
                    raise FileNotFoundError(f'resume: {path} is missing (population_size={self.population_size})')
                self.load_network(net, path, strict=True)
        if self.archive is not None:
            self._resume_archive(resume_state)
        super().resume_training(resume_state)

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img):
        if self.opt['rank'] == 0:
            self.nondist_validation(dataloader, current_iter, tb_logger, save_img)

    @torch.no_grad()
    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """Every individual's metrics on the validation set, logged as ``<metric>_<i>``."""
        dataset_name = dataloader.dataset.opt['name']
        metrics_opt = self.opt['val'].get('metrics') or {}
        results = {f'{name}_{i}': 0.0 for name in metrics_opt for i in range(self.population_size)}
        self.net_g.eval()
        for data in dataloader:
            self.feed_data(data)
            gt_img = tensor2img(self.gt) if 'gt' in data else None
            for i, net in enumerate(self.net_g):
                sr_img = tensor2img(restore(net, self.lq, self.tile, self.opt.get('scale', 1),
                                            self.size_multiple))
                for name, metric_opt in metrics_opt.items():
                    results[f'{name}_{i}'] += calculate_metric({'img': sr_img, 'img2': gt_img}, metric_opt)
        self.net_g.train()
        lines = [f'Validation {dataset_name}']
        for key, total in results.items():
            value = total / len(dataloader)
            lines.append(f'\t # {key}: {value:.4f}')
            if tb_logger:
                tb_logger.add_scalar(f'metrics/{dataset_name}/{key}', value, current_iter)
        self.val_results = {k: v / len(dataloader) for k, v in results.items()}
        get_root_logger().log(logging.INFO, '\n'.join(lines))
