"""EA-Adam's two phases against the naive ways of running them, timed in one process on the same data.

    python benchmarks/ea_phase.py [--repeats 2] [--patches 5] [--generations 1] [--batch 1] [--num-block 16]
                                  [--threads 1]

(a) EA phase: ``FitnessEvaluator`` (GT side prepared once per phase, channels-last patches, wide 3x3 convolutions on
    NNPACK; and without NNPACK; and with NCHW patches too), our loop with every child's losses recomputed in full
    (GT VGG features included) on NCHW patches without NNPACK, and the authors' loop re-enacted
    (``authors_ea_phase``); the first four from the same seed (the direct-kernel ones asserted to decide alike), and
    the authors' objectives asserted equal to ours.
(b) Adam phase: one population step of ``EAAdamModel`` (P individuals) against P steps of BasicSR's ``ESRGANModel``
    with the same generator, discriminator and losses, on the same batch.
(c) One individual's two per-objective gradients: two backward passes (as ``EAAdamModel``) against alternatives.

The losses are those of options/train_EAAdam_x4.yml with an MSRResNet generator (the paper's SRResNet by default).
VGG19 weights cannot be downloaded here, so the perceptual loss runs on a randomly initialised VGG19 written to a
temporary file: the timings do not depend on the weights' values.
"""
import argparse
import contextlib
import copy
import io
import os
import statistics
import sys
import tempfile
import time

import torch
import yaml

import basicsr_ea  # noqa: F401  (repairs BasicSR, registers the plugin)
from basicsr.models import build_model
from basicsr_ea.compat import perceptual_weights
from basicsr_ea.evolution.decomposition import tchebycheff
from basicsr_ea.models.fitness import FitnessEvaluator, PerceptualObjective
from basicsr_ea.models.nnpack_conv import NNPACKConvolutions
from basicsr_ea.optim import build_optimizer
from basicsr_ea.testing import write_random_vgg19

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_OPTIONS = os.path.join(REPO_ROOT, 'options', 'train_EAAdam_x4.yml')
NAIVE_EA = 'GT side recomputed for every child (our loop)'
FAST_EA = 'GT side prepared once, channels-last, NNPACK (default)'
AUTHORS_EA = "the authors' loop, re-enacted (all of it)"


def make_demo_data(root):
    """The project's demo data set (scripts/make_demo_data.py), quietly: its LMDB writer reports progress."""
    sys.path.insert(0, os.path.join(REPO_ROOT, 'scripts'))
    from make_demo_data import make_demo_data as make
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        make(root)


def benchmark_options(args, work_dir):
    """The paper's RRDB options with an MSRResNet generator, every individual trained (none frozen), no EA phase at
    iteration 1, and ``args.patches`` 128 px fitness patches from the demo data."""
    with open(PAPER_OPTIONS) as f:
        opt = yaml.safe_load(f)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, num_gpu=0, auto_resume=False)
    opt['network_g'] = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64,
                        'num_block': args.num_block, 'upscale': 4}
    opt['path'] = {'pretrain_network_g': None, 'pretrain_network_vgg': os.path.join(work_dir, 'vgg19_random.pth'),
                   'experiments_root': work_dir, 'models': os.path.join(work_dir, 'models')}
    train = opt['train']
    train['optim_g']['frozen'] = []
    data = os.path.join(work_dir, 'demo_x4', 'train')
    train['ea']['batch_size'] = args.patches
    train['ea']['fitness'].update(dataroot_gt=os.path.join(data, 'HR'), dataroot_lq=os.path.join(data, 'LR_bicubic_x4'),
                                  io_backend={'type': 'disk'}, num_images=args.patches, max_patches_per_image=1)
    return opt


def esrgan_options(opt):
    """BasicSR's ESRGANModel with the same networks and losses, plain Adam with EA-Adam's settings."""
    opt = copy.deepcopy(opt)
    opt['model_type'] = 'ESRGANModel'
    optim_g = opt['train']['optim_g']
    opt['train']['optim_g'] = {'type': 'Adam', 'lr': optim_g['lr'], 'betas': optim_g['betas']}
    return opt


def interleaved(variants, repeats):
    """Run the variants in turn, ``repeats`` rounds, so that load from other jobs falls on all of them alike: each
    one's seconds, and each one's last result."""
    times, results = {name: [] for name in variants}, {}
    for _ in range(repeats):
        for name, variant in variants.items():
            start = time.perf_counter()
            results[name] = variant()
            times[name].append(time.perf_counter() - start)
    return times, results


def authors_losses(net, lq, gt, perceptual_loss):
    """A network's fitness as the authors' loop computes it: one forward per fitness image (here one patch each)
    with autograd recording (their loop has no ``no_grad``), BasicSR's perceptual loss on SR and GT, ``.item()``;
    the mean over the images."""
    losses = []
    for lq_image, gt_image in zip(lq.split(1), gt.split(1)):
        sr = net(lq_image)
        losses.append((torch.nn.functional.l1_loss(sr, gt_image).item(), perceptual_loss(sr, gt_image)[0].item()))
    return torch.tensor(losses, dtype=torch.float64).mean(dim=0)


def authors_sbx(parent, mate, generator):
    """``gen_cross``: both SBX offspring (eta 20, one spread a tensor) built in deep copies, the mate's state dict
    taken anew for every key as theirs is; the first offspring is the child."""
    child, sibling = copy.deepcopy(parent), copy.deepcopy(parent)
    first, second = {}, {}
    for name, p1 in parent.state_dict().items():
        u = torch.rand((), generator=generator, dtype=torch.float64).item()
        beta = (2 * u) ** (1 / 21) if u < 0.5 else (2 - 2 * u) ** (-1 / 21)
        p2 = mate.state_dict()[name]
        first[name], second[name] = 0.5 * ((1 + beta) * p1 + (1 - beta) * p2), 0.5 * ((1 - beta) * p1 + (1 + beta) * p2)
    child.load_state_dict(first)
    sibling.load_state_dict(second)
    return child


def authors_mutation(parent, generator):
    """``gen_mut(only_conv=True)``: conv weights only, each element with probability 0.02 gets N(0, 0.03^2)."""
    child = copy.deepcopy(parent)
    mutated = {name: w + (torch.rand(w.shape, generator=generator) < 0.02) * torch.randn(w.shape, generator=generator)
               * 0.03 for name, w in parent.state_dict().items() if name.endswith('weight')}
    child.load_state_dict(mutated, strict=False)
    return child


def authors_ea_phase(model, generations):
    """The authors' EA phase (train_EA-Adam_srresnet.py, lines 313-415) re-enacted on the benchmark's networks and
    fitness set: population evaluated, then every EA iteration each individual's child, made from deep copies (the
    parent, two mates, both SBX offspring, the mutant) and always evaluated, replaces each neighbour j it improves
    under Tchebycheff with the running ideal and nadir, by a deep copy. Returns the initial objectives."""
    optimizer, generator = model.optimizer_g, torch.Generator().manual_seed(0)
    lq, gt, perceptual = model.fitness_lq, model.fitness_gt, model.cri_perceptual
    nets = list(copy.deepcopy(model.net_g))
    F = torch.stack([authors_losses(net, lq, gt, perceptual) for net in nets])
    F_before, ideal, nadir = F.clone(), F.amin(dim=0), F.amax(dim=0)
    population = range(len(nets))
    for _ in range(generations):
        for i in population:
            child = nets[i]
            if torch.rand((), generator=generator) <= 0.9:
                hood = [j for j in optimizer.neighborhoods[i].tolist() if j != i]
                pool = [j for j in population if j != i] if torch.rand((), generator=generator) <= 0.3 else hood
                pair = torch.randperm(len(pool), generator=generator)[:2].tolist()
                parent, mate, _ = (copy.deepcopy(nets[k]) for k in (i, pool[pair[0]], pool[pair[-1]]))
                child = authors_sbx(parent, mate, generator)
            else:
                child = copy.deepcopy(child)
            if torch.rand((), generator=generator) <= 0.2:
                child = authors_mutation(child, generator)
            f_child = authors_losses(child, lq, gt, perceptual)
            ideal, nadir = torch.minimum(ideal, f_child), torch.maximum(nadir, f_child)
            for j in optimizer.neighborhoods[i].tolist():
                scores = tchebycheff(torch.stack((f_child, F[j])), optimizer.ref_dirs[j], ideal, nadir)
                if j not in optimizer.frozen and scores[0] < scores[1]:
                    nets[j], F[j] = copy.deepcopy(child), f_child
    return F_before


def bench_ea_phase(model, generations, repeats):
    """(a): seconds of the implemented EA phase, of the same with NCHW patches, of the naive one (the three take the
    same decisions on objectives equal to float rounding) and of the authors' (same initial objectives)."""
    lq, gt, batch_size = model.fitness_lq, model.fitness_gt, model.ea_opt.batch_size

    def prepared_once(channels_last=True, nnpack=True):
        return FitnessEvaluator(model.objectives, lq, gt, model.scratch_net, batch_size, channels_last, nnpack)

    def recomputed_per_child():
        return lambda genome: prepared_once(channels_last=False, nnpack=False)(genome)

    def ea_phase(make_evaluator):
        """One EA phase on a copy of the population, from the same seed: (report, evolved weights)."""
        nets = copy.deepcopy(model.net_g)
        optimizer = build_optimizer(model.opt['train']['optim_g'], [list(net.parameters()) for net in nets])
        report = optimizer.evolve(make_evaluator(), generations, model.ea_opt.max_replacements)
        return report, [p.detach() for p in nets.parameters()]

    times, results = interleaved({FAST_EA: lambda: ea_phase(prepared_once),
                                  'GT side prepared once, channels-last': lambda: ea_phase(
                                      lambda: prepared_once(nnpack=False)),
                                  'GT side prepared once, NCHW patches': lambda: ea_phase(
                                      lambda: prepared_once(False, nnpack=False)),
                                  NAIVE_EA: lambda: ea_phase(recomputed_per_child),
                                  AUTHORS_EA: lambda: authors_ea_phase(model, generations)}, repeats)
    (fast, fast_weights), (direct, direct_weights), *others, authors_before = results.values()
    assert torch.allclose(fast['objectives_before'], authors_before, rtol=1e-6, atol=0)
    assert torch.allclose(fast['objectives_before'], direct['objectives_before'], rtol=1e-6, atol=0)
    for report, weights in others:
        for key in ('objectives_before', 'objectives', 'ideal', 'nadir'):
            assert torch.allclose(direct[key], report[key], rtol=1e-6, atol=0), key
        assert direct['replacements'] == report['replacements']
        assert all(torch.equal(a, b) for a, b in zip(direct_weights, weights))
    # NNPACK rounds differently: where children tie to 1e-6 (this benchmark's population starts as one network)
    # a decision can go the other way, so it is reported, not asserted.
    same = fast['replacements'] == direct['replacements'] and all(
        torch.equal(a, b) for a, b in zip(fast_weights, direct_weights))
    return times, same


def bench_cost_split(model, repeats):
    """(a'): seconds of one evaluation's two parts on the fitness set, the generator's forward (G) and the perceptual
    network's forward on its output (V): on NCHW patches, on channels-last patches, and on channels-last patches with
    NNPACK convolutions. The authors' loop costs G + 2V a child (V on the GT too), one that prepares the GT side once
    G + V: (G + 2V) / (G + V) is the most that caching can give at one numeric path."""
    perceptual = next(o for o in model.objectives if isinstance(o, PerceptualObjective))
    net, parts = model.net_g[0].eval(), {}
    paths = {'NCHW': (torch.contiguous_format, contextlib.nullcontext),
             'channels-last': (torch.channels_last, contextlib.nullcontext),
             'channels-last + NNPACK': (torch.channels_last, NNPACKConvolutions)}
    with torch.no_grad():
        for name, (layout, convolutions) in paths.items():
            with convolutions():
                lq = model.fitness_lq.contiguous(memory_format=layout)
                sr = net(lq)
                times = interleaved({'G': lambda: net(lq), 'V': lambda: perceptual.extract(sr)}, repeats)[0]
            parts[name] = {part: min(seconds) for part, seconds in times.items()}
    net.train()
    return parts


def bench_adam_step(model, esrgan, repeats):
    """(b): seconds of one population step and of P single-network ESRGAN steps, on the same batch."""
    esrgan.optimize_parameters(1)  # warm-up: the kernels both models run
    steps = {'EAAdamModel, 1 population step': lambda: model.optimize_parameters(1),
             f'ESRGANModel, {model.population_size} steps': lambda: [esrgan.optimize_parameters(1)
                                                                    for _ in range(model.population_size)]}
    return interleaved(steps, repeats)[0]


def objective_losses(model, i, gt_features=None):
    """Individual i's distortion and perception losses as ``EAAdamModel`` computes them; with ``gt_features`` the
    perceptual term reuses the GT's VGG features (equal to BasicSR's loss: same-sized patches, L1 means)."""
    sr = model.net_g[i](model.lq)
    if gt_features is None:
        l_percep = model.cri_perceptual(sr, model.gt)[0]
    else:
        l_percep = PerceptualObjective(model.cri_perceptual)(sr, gt_features).mean()
    l_g_gan = model._gan_losses(model.net_d[i](model.gt), model.net_d[i](sr))[0]
    return sr, model.cri_pix(sr, model.gt), l_percep + l_g_gan


def two_backward_passes(model, i, gt_features=None):
    _, l_pix, l_perception = objective_losses(model, i, gt_features)
    params = model.g_params[i]
    return torch.autograd.grad(l_pix, params, retain_graph=True), torch.autograd.grad(l_perception, params)


def batched_over_losses(model, i, gt_features=None):
    _, l_pix, l_perception = objective_losses(model, i, gt_features)
    grads = torch.autograd.grad(torch.stack([l_pix, l_perception]), model.g_params[i], torch.eye(2),
                                is_grads_batched=True)
    return [g[0] for g in grads], [g[1] for g in grads]


def batched_through_generator(model, i, gt_features=None):
    """Each loss's gradient w.r.t. SR first (VGG and D run backward once), then one batched backward through G:
    the same arithmetic as two passes through G, in kernels twice as large."""
    sr, l_pix, l_perception = objective_losses(model, i, gt_features)
    grad_sr = [torch.autograd.grad(loss, sr, retain_graph=True)[0] for loss in (l_pix, l_perception)]
    grads = torch.autograd.grad(sr, model.g_params[i], torch.stack(grad_sr), is_grads_batched=True)
    return [g[0] for g in grads], [g[1] for g in grads]


def max_relative_error(grads, reference):
    return max(((g - r).norm() / r.norm().clamp_min(1e-30)).item()
               for objective, ref in zip(grads, reference) for g, r in zip(objective, ref))


def bench_gradients(model, repeats):
    """(c): seconds of one individual's forward + both gradients, and each variant's largest relative deviation
    (per parameter tensor) from the model's two backward passes."""
    with torch.no_grad():
        gt_features = model.cri_perceptual.vgg(model.gt)
    variants = {'two backward passes, GT features per individual': lambda: two_backward_passes(model, 0),
                'one batched backward over both losses': lambda: batched_over_losses(model, 0),
                'dL/dSR each, one batched backward through G': lambda: batched_through_generator(model, 0),
                'two passes, GT features shared (EAAdamModel)': lambda: two_backward_passes(model, 0, gt_features),
                'batched through G + shared GT VGG features': lambda: batched_through_generator(model, 0, gt_features)}
    times, results = interleaved(variants, repeats)
    reference = results['two backward passes, GT features per individual']
    return times, {name: max_relative_error(grads, reference) for name, grads in results.items()}


def table(title, times, baseline, errors=None):
    """Fastest and median seconds of each row; speed-up = the baseline's fastest / the row's fastest, the fastest
    run being the one least disturbed by other jobs."""
    base = min(times[baseline])
    width = max(len(name) for name in times)
    header = f'| {"variant":<{width}} | fastest s | median s | speed-up |' + (' max rel. grad diff |' if errors else '')
    lines = [f'\n{title}', f'speed-up = fastest seconds of "{baseline}" / fastest seconds of the row', header,
             '|' + '|'.join('-' * len(cell) for cell in header.split('|')[1:-1]) + '|']
    for name, seconds in times.items():
        fastest = min(seconds)
        row = f'| {name:<{width}} | {fastest:9.2f} | {statistics.median(seconds):8.2f} | {base / fastest:7.2f}x |'
        lines.append(row + (f' {errors[name]:18.1e} |' if errors else ''))
    return '\n'.join(lines)


def build_models(args):
    """EAAdamModel and ESRGANModel from the same options and initial weights, fed the same batch."""
    with tempfile.TemporaryDirectory() as work_dir:
        make_demo_data(os.path.join(work_dir, 'demo_x4'))
        opt = benchmark_options(args, work_dir)
        write_random_vgg19(opt['path']['pretrain_network_vgg'])
        with perceptual_weights(opt):  # BasicSR's ESRGANModel reads path.pretrain_network_vgg too, downloads nothing
            model, esrgan = build_model(opt), build_model(esrgan_options(opt))
    esrgan.net_g.load_state_dict(model.net_g[0].state_dict())
    esrgan.net_d.load_state_dict(model.net_d[0].state_dict())
    g = torch.Generator().manual_seed(0)
    data = {'lq': torch.rand(args.batch, 3, 32, 32, generator=g),
            'gt': torch.rand(args.batch, 3, 128, 128, generator=g)}
    model.feed_data(data)
    esrgan.feed_data(data)
    return model, esrgan


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=2, help='timed rounds of (a) and (b)')
    parser.add_argument('--grad-repeats', type=int, default=5, help='timed rounds of (c), which is short')
    parser.add_argument('--patches', type=int, default=5, help='128 px fitness patches, one an image (at least P=5)')
    parser.add_argument('--generations', type=int, default=1, help='MOEA/D generations in the EA phase')
    parser.add_argument('--batch', type=int, default=1, help='training batch (LR 32 px, GT 128 px)')
    parser.add_argument('--num-block', type=int, default=16, help='MSRResNet blocks (16: the paper\'s SRResNet)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads; on cores shared with other jobs, multi-threaded runs stall erratically')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, esrgan = build_models(args)
    load, P = os.getloadavg()[0], model.population_size
    print(f'MSRResNet num_feat 64, num_block {args.num_block}; P={P} (none frozen); VGGStyleDiscriminator 64, 128 px; '
          f'torch {torch.__version__}, CPU, {torch.get_num_threads()} thread(s)')
    print('Perceptual loss: BasicSR PerceptualLoss over a RANDOMLY initialised VGG19 (VGG weights cannot be '
          'downloaded here); the timings do not depend on the weights\' values.')

    times, nnpack_same = bench_ea_phase(model, args.generations, args.repeats)
    print(table(f'(a) EA phase: {args.generations} generation(s) = {P * (args.generations + 1)} evaluations of '
                f'{args.patches} 128 px patches, objectives l1 + perceptual. Same seed; the direct-kernel rows take '
                'identical decisions (replacements, weights) on objectives, ideal and nadir equal to 1e-6 relative, '
                'and the authors\' loop\'s objectives of the population equal to ours to 1e-6: checked. The NNPACK '
                f'row\'s decisions are {"the same" if nnpack_same else "NOT all the same (ties broken by rounding)"}',
                times, AUTHORS_EA))

    parts = bench_cost_split(model, args.grad_repeats)
    g, v = parts['NCHW']['G'], parts['NCHW']['V']
    variation = model.optimizer_g.variation
    unvaried = (1 - variation['prob_crossover']) * (1 - variation['prob_mutation'])
    split = ', '.join(f"{name}: G {part['G']:.2f} s, V {part['V']:.2f} s" for name, part in parts.items())
    fast = parts['channels-last + NNPACK']
    print(f"(a') one evaluation of the {args.patches} patches, generator G and perceptual network on its output V: "
          f"{split}. Bound on (a)'s speed-up from caching the GT side alone, (G + 2V) / (G + V) = "
          f"{(g + 2 * v) / (g + v):.2f}x; with the faster convolutions too, (G + 2V) / (G' + V') = "
          f"{(g + 2 * v) / (fast['G'] + fast['V']):.2f}x. Every loop but the authors' skips children equal to their "
          f"parent (the authors' evaluates them: {unvaried:.0%} of children at these probabilities).")

    times = bench_adam_step(model, esrgan, args.repeats)
    print(table(f'(b) Adam phase, batch {args.batch} (LR 32 px), no EA phase: L1 + perceptual + 0.005 relativistic '
                'GAN in both. EA-Adam needs two backward passes per individual (one per objective, for per-objective '
                'gradient normalisation); ESRGAN one', times, f'ESRGANModel, {P} steps'))

    times, errors = bench_gradients(model, args.grad_repeats)
    print(table(f'(c) One individual\'s forward + both per-objective gradients, batch {args.batch}', times,
                'two backward passes, GT features per individual', errors))
    print(f'\nLoad average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end, on {os.cpu_count()} cores '
          'shared with other jobs: the ratios compare the fastest of runs interleaved in this process; absolute '
          'seconds vary with the load.')


if __name__ == '__main__':
    main()
