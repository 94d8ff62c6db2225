"""All-in-one restoration model (MEASNet, arXiv 2407.19139): BasicSR's ``SRModel`` plus the arch's auxiliary loss
and a per-task validation that also logs the average over tasks.
"""
from collections import OrderedDict
from copy import deepcopy

import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from basicsr_ea.compat import RepairedModel, perceptual_weights
from basicsr_ea.models.train_options import AllInOneTrainOptions
from basicsr_ea.options import parse
from basicsr_ea.tiling import TiledTestMixin

RGB_METRICS = ('calculate_psnr', 'calculate_ssim', 'calculate_psnr_pt', 'calculate_ssim_pt')
AVERAGE = 'average'  # the name the cross-task average is logged under, as if it were one more dataset


def arch_aux_loss(net):
    """The auxiliary loss a bare network computed in its last forward (MEASNet's expert load-balancing loss), or
    None. Archs opt in by exposing an ``aux_loss`` tensor, so every stock BasicSR arch runs under this model."""
    return getattr(net, 'aux_loss', None)


class AuxLossGradient(torch.autograd.Function):
    """Identity on ``output`` whose backward also sends ``weight`` into ``aux``: any loss SRModel builds from the
    output then has the gradient of ``loss + weight * aux`` (Megatron-LM's ``MoEAuxLossAutoScaler`` does the same)."""

    @staticmethod
    def forward(ctx, output, aux, weight):
        ctx.save_for_backward(aux)
        ctx.weight = weight
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad_output):
        aux, = ctx.saved_tensors
        return grad_output, torch.full_like(aux, ctx.weight), None


def default_rgb_metrics(opt):
    """Default PSNR/SSIM to RGB without border crop, the all-in-one convention (SR's is Y with a border crop);
    warn where the options ask otherwise, since the published tables would not be comparable."""
    for name, metric_opt in ((opt.get('val') or {}).get('metrics') or {}).items():
        if metric_opt.get('type') in RGB_METRICS:
            metric_opt.setdefault('crop_border', 0)
            metric_opt.setdefault('test_y_channel', False)
            if metric_opt['crop_border'] or metric_opt['test_y_channel']:
                get_root_logger().warning(f'Metric {name} measures with crop_border={metric_opt["crop_border"]}, '
                                          f'test_y_channel={metric_opt["test_y_channel"]}; all-in-one results are '
                                          'reported on RGB without border crop.')


@MODEL_REGISTRY.register()
class AllInOneModel(RepairedModel, TiledTestMixin, SRModel):
    """SRModel for all-in-one restoration.

    Training adds ``train.aux_weight`` (default 0.001) times the arch's auxiliary loss (``arch_aux_loss``) to
    SRModel's losses and logs it as ``l_aux``. Each val/test dataset holds one task (``AllInOneTestDataset``); once
    every one of them has been validated at an iteration, the average of each metric over the tasks is logged and
    sent to TensorBoard as dataset ``average``, with its best value tracked like any dataset's.

    Under ``nn.DataParallel`` (several GPUs without a launcher) the replicas' auxiliary losses are out of reach:
    an arch with one needs the distributed launcher there.
    """

    def __init__(self, opt):
        opt = deepcopy(opt)
        default_rgb_metrics(opt)
        self.task_results = {}  # val dataset name -> (iteration, {metric: value}) of its latest validation
        super().__init__(opt)

    def init_training_settings(self):
        self.aux_weight = parse(AllInOneTrainOptions, self.opt['train'], 'train').aux_weight
        with perceptual_weights(self.opt):
            super().init_training_settings()
        self.net_g.register_forward_hook(self._attach_aux_loss)

    def _attach_aux_loss(self, net, inputs, output):
        """Forward hook of ``net_g``: in a training forward, make the output carry the auxiliary loss's gradient."""
        aux = arch_aux_loss(self.get_bare_model(net))
        if aux is None or not (net.training and torch.is_grad_enabled() and aux.requires_grad):
            return None
        if isinstance(net, torch.nn.DataParallel):
            raise RuntimeError('The auxiliary loss of a DataParallel network is lost with its replicas; train with '
                               'the distributed launcher (--launcher pytorch) instead.')
        return AuxLossGradient.apply(output, aux, self.aux_weight)

    def optimize_parameters(self, current_iter):
        super().optimize_parameters(current_iter)
        aux = arch_aux_loss(self.get_bare_model(self.net_g))
        if aux is not None:
            self.log_dict.update(self.reduce_loss_dict(OrderedDict(l_aux=aux.detach())))

    def task_names(self):
        """Names of the datasets validated one task each: every dataset of the options but the training one."""
        return {dataset['name'] for phase, dataset in self.opt['datasets'].items() if phase != 'train'}

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        if self.opt['val'].get('metrics') is None:
            return
        self.task_results[dataloader.dataset.opt['name']] = (current_iter, dict(self.metric_results))
        tasks = self.task_names()
        done = {name for name, (iteration, _) in self.task_results.items() if iteration == current_iter}
        if len(tasks) > 1 and tasks <= done:
            self.metric_results = {
                metric: sum(self.task_results[name][1][metric] for name in tasks) / len(tasks)
                for metric in self.metric_results
            }
            self._initialize_best_metric_results(AVERAGE)
            for metric, value in self.metric_results.items():
                self._update_best_metric_result(AVERAGE, metric, value, current_iter)
            self._log_validation_metric_values(current_iter, AVERAGE, tb_logger)
