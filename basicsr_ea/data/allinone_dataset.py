"""All-in-one restoration data (PromptIR, arXiv 2306.13090; AdaIR; MEASNet) as BasicSR datasets.

``AllInOneTrainDataset`` mixes the tasks named in ``de_type`` from PromptIR's training folder layout, with Gaussian
noise added on the fly; ``AllInOneTestDataset`` holds one task, so each ``val_*``/``test_*`` entry of the options
is validated and logged on its own.
"""
import re
import zlib
from dataclasses import dataclass, field
from os import path as osp

import numpy as np
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import FileClient, img2tensor, scandir
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from basicsr_ea.data.degradations import add_gaussian_noise
from basicsr_ea.image_formats import IMAGE_EXTENSIONS, read_color
from basicsr_ea.options import OptionError, check_io_backend, parse

# PromptIR's task ids.
TASK_IDS = {'denoise_15': 0, 'denoise_25': 1, 'denoise_50': 2, 'derain': 3, 'dehaze': 4, 'deblur': 5, 'enhance': 6}
# Training folders under ``dataroot``, per task group: (degraded, clean); denoising degrades its clean images itself.
TRAIN_LAYOUT = {
    'denoise': (None, 'Denoise'),
    'derain': ('Derain/rainy', 'Derain/gt'),
    'dehaze': ('Dehaze/synthetic', 'Dehaze/original'),
    'deblur': ('Deblur/blur', 'Deblur/sharp'),
    'enhance': ('Enhance/low', 'Enhance/gt'),
}
# PromptIR's and AdaIR's repeat factors, which balance WED+BSD400, Rain100L, RESIDE OTS, GoPro and LOL.
DEFAULT_REPEAT = {'denoise_15': 3, 'denoise_25': 3, 'denoise_50': 3, 'derain': 120, 'dehaze': 1, 'deblur': 5,
                  'enhance': 20}


@dataclass(frozen=True, kw_only=True)
class DatasetOptions:
    """What BasicSR's pipeline reads and adds to every dataset's options (its data loader's keys included)."""
    name: str
    type: str
    phase: str | None = None
    scale: int | None = None
    io_backend: dict = field(default_factory=lambda: {'type': 'disk'})
    num_worker_per_gpu: int = 0
    batch_size_per_gpu: int = 1
    dataset_enlarge_ratio: int = 1
    prefetch_mode: str | None = None
    pin_memory: bool = False
    persistent_workers: bool = False
    use_shuffle: bool = True

    def __post_init__(self):
        check_io_backend(self.io_backend)


@dataclass(frozen=True, kw_only=True)
class AllInOneTrainOptions(DatasetOptions):
    """``AllInOneTrainDataset``'s options (see its docstring)."""
    dataroot: str
    de_type: list[str]
    gt_size: int
    repeat: dict[str, int] | None = None
    meta_info_file: dict[str, str] | None = None
    use_hflip: bool = True
    use_rot: bool = True

    def __post_init__(self):
        super().__post_init__()
        for task in self.de_type:
            if task not in TASK_IDS:
                raise OptionError(f'de_type: unknown all-in-one task {task!r}; known: {", ".join(TASK_IDS)}')
        for task in self.repeat or {}:
            if task not in TASK_IDS:
                raise OptionError(f'repeat.{task}: not an all-in-one task; known: {", ".join(TASK_IDS)}')
        unknown = sorted(set(self.meta_info_file or {}) - set(TRAIN_LAYOUT))
        if unknown:
            raise OptionError(f'meta_info_file.{unknown[0]}: not a task group; groups: {", ".join(TRAIN_LAYOUT)}')


@dataclass(frozen=True, kw_only=True)
class AllInOneTestOptions(DatasetOptions):
    """``AllInOneTestDataset``'s options (see its docstring)."""
    task: str
    dataroot_gt: str
    dataroot_lq: str | None = None
    meta_info_file: str | None = None
    noise_seed: int = 0
    crop_base: int = 1

    def __post_init__(self):
        super().__post_init__()
        if self.task not in TASK_IDS:
            raise OptionError(f'task: unknown all-in-one task {self.task!r}; known: {", ".join(TASK_IDS)}')
        if noise_sigma(self.task) is None and self.dataroot_lq is None:
            raise OptionError(f'dataroot_lq: required for task {self.task} (only denoising degrades the clean images '
                              'itself)')


def dataset_options(cls, opt):
    """``cls`` from a dataset's options, with errors naming it as ``datasets.<phase> (<name>)``."""
    return parse(cls, opt, f'datasets.{opt.get("phase", "?")} ({opt.get("name")})')


def task_group(task):
    """``denoise_25`` -> ``denoise``: the folder group of a task."""
    return task.split('_')[0]


def noise_sigma(task):
    """Noise level of a denoising task (on the 0-255 scale), None for the other tasks."""
    return int(task.split('_')[1]) if task_group(task) == 'denoise' else None


def pair_id(task, key):
    """What a degraded image and its clean image have in common, from the image name (directories dropped, clean
    folders are flat): ``rain-12`` and ``norain-12`` for deraining (PromptIR's Rain100L names; identical names pair
    too), ``0025_0.8_0.1`` (id, airlight, beta) and ``0025`` for dehazing (RESIDE's names), the name otherwise."""
    name = key.rsplit('/', 1)[-1]
    if task == 'derain':
        return re.sub(r'^no(?=rain-)', '', name)
    if task == 'dehaze':
        return name.split('_')[0]
    return name


def _read_list_file(list_file):
    """Image names of a list file: the first field of each non-empty line (BasicSR's ``meta_info.txt`` format)."""
    if not osp.isfile(list_file):
        raise FileNotFoundError(f'List file {list_file} does not exist.')
    with open(list_file) as f:
        return [line.split()[0] for line in f if line.strip()]


def list_images(folder, backend, list_file=None):
    """Map each image key (its path relative to ``folder`` without the extension) to what the file client reads:
    the file path on disk, the key itself in an LMDB (whose ``meta_info.txt`` lists its images, BasicSR's
    convention). ``list_file`` restricts to the images it names, each of which must exist."""
    if backend == 'lmdb':
        if not folder.endswith('.lmdb'):
            raise ValueError(f'io_backend lmdb needs .lmdb folders, got {folder}.')
        stored = _read_list_file(osp.join(folder, 'meta_info.txt'))
        names = _read_list_file(list_file) if list_file else stored
        keys = {osp.splitext(name)[0] for name in stored}
        missing = [name for name in names if osp.splitext(name)[0] not in keys]
        if missing:
            raise FileNotFoundError(f'{list_file} names {missing[0]}, which is not in {folder}.')
        return {osp.splitext(name)[0]: osp.splitext(name)[0] for name in sorted(names)}
    if not osp.isdir(folder):
        raise FileNotFoundError(f'Image folder {folder} does not exist.')
    if list_file:
        names = _read_list_file(list_file)
        missing = [name for name in names if not osp.isfile(osp.join(folder, name))]
        if missing:
            raise FileNotFoundError(f'{list_file} names {osp.join(folder, missing[0])}, which does not exist.')
    else:
        names = sorted(scandir(folder, suffix=IMAGE_EXTENSIONS, recursive=True))
    images = {}
    for name in names:
        key = osp.splitext(name)[0].replace(osp.sep, '/')
        if key in images:
            raise ValueError(f'Two images in {folder} share the name {key}: {images[key]} and {name}.')
        images[key] = osp.join(folder, name)
    return images


def task_samples(task, lq_folder, gt_folder, backend, list_file=None):
    """The samples of one task: ``(lq, gt)`` references, each ``(folder, path or lmdb key)``; ``lq`` is None for
    denoising, whose degraded image is made from ``gt``. The list file names the degraded images (the clean ones for
    denoising). A task without images, or a degraded image without a clean one, is an error."""
    if lq_folder is None:
        samples = [(None, (gt_folder, ref)) for ref in list_images(gt_folder, backend, list_file).values()]
    else:
        clean = {}
        for key, ref in list_images(gt_folder, backend).items():
            other = clean.setdefault(pair_id(task, key), ref)
            if other != ref:
                raise ValueError(f'{ref} and {other} in {gt_folder} are both the clean image of {pair_id(task, key)}.')
        samples = []
        for key, ref in list_images(lq_folder, backend, list_file).items():
            if pair_id(task, key) not in clean:
                raise FileNotFoundError(f'No clean image in {gt_folder} pairs with {ref} (task {task}).')
            samples.append(((lq_folder, ref), (gt_folder, clean[pair_id(task, key)])))
    if not samples:
        raise ValueError(f'No images for task {task} in {lq_folder or gt_folder}' +
                         (f' listed by {list_file}.' if list_file else '.'))
    return samples


class _AllInOneDataset(data.Dataset):
    """Reads the ``(lq, gt)`` references of ``self.samples`` through BasicSR's FileClient, one LMDB client per
    folder; the client is opened lazily so each data-loader worker gets its own LMDB environment."""

    options_type = DatasetOptions

    def __init__(self, opt):
        super().__init__()
        self.opt = opt  # BasicSR's validation reads opt['name']
        self.options = dataset_options(self.options_type, opt)
        self.backend = self.options.io_backend['type']
        self.samples = []
        self.file_client = None

    def _open_client(self):
        backend_opt = {key: value for key, value in self.options.io_backend.items() if key != 'type'}
        if self.backend == 'lmdb':
            folders = sorted({ref[0] for sample in self.samples for ref in sample[1:] if ref is not None})
            backend_opt.update(db_paths=folders, client_keys=folders)
        return FileClient(self.backend, **backend_opt)

    def _read(self, ref):
        if self.file_client is None:
            self.file_client = self._open_client()
        folder, path = ref
        try:
            return read_color(self.file_client, path, folder)
        except ValueError as err:
            raise ValueError(f'{err} (in {folder})') from err

    def _to_dict(self, task, img_lq, img_gt, lq_ref, gt_ref):
        img_gt, img_lq = img2tensor([img_gt, img_lq], bgr2rgb=True, float32=True)
        return {'lq': img_lq, 'gt': img_gt, 'lq_path': (lq_ref or gt_ref)[1], 'gt_path': gt_ref[1],
                'task': task, 'task_id': TASK_IDS[task]}

    def __len__(self):
        return len(self.samples)


@DATASET_REGISTRY.register()
class AllInOneTrainDataset(_AllInOneDataset):
    """The tasks of ``de_type`` mixed, each repeated, random ``gt_size`` crops with flips and rotations; denoising
    samples get Gaussian noise on the fly (after the crop, quantised to uint8 levels).

    Folder layout under ``dataroot`` (PromptIR's ``data/Train``); clean folders are flat::

        Denoise/*.png                                 clean images (WED, BSD400) for every denoise_* task
        Derain/rainy/rain-N.png     Derain/gt/norain-N.png        (Rain100L)
        Dehaze/synthetic/**/ID_A_B.jpg   Dehaze/original/ID.jpg   (RESIDE OTS: id, airlight, beta)
        Deblur/blur/NAME.png        Deblur/sharp/NAME.png         (GoPro)
        Enhance/low/NAME.png        Enhance/gt/NAME.png           (LOL)

    With ``io_backend: {type: lmdb}`` each folder ``X`` above is an LMDB ``X.lmdb`` (``Derain/rainy.lmdb``, ...) made
    by BasicSR's ``make_lmdb_from_imgs`` with keys = relative paths without extension.

    Args:
        opt (dict): ``dataroot``; ``de_type`` (list of task names, see ``TASK_IDS``); ``repeat`` ({task: int},
            defaults ``DEFAULT_REPEAT``); ``meta_info_file`` ({group: list file}, optional, group = ``denoise``,
            ``derain``, ``dehaze``, ``deblur`` or ``enhance``; names relative to the degraded folder, the clean one
            for denoise); ``io_backend``; ``gt_size``; ``use_hflip``; ``use_rot``.
    """

    options_type = AllInOneTrainOptions

    def __init__(self, opt):
        super().__init__(opt)
        options = self.options
        repeat = {**DEFAULT_REPEAT, **(options.repeat or {})}
        list_files = options.meta_info_file or {}
        root = osp.expanduser(options.dataroot)
        suffix = '.lmdb' if self.backend == 'lmdb' else ''
        for task in options.de_type:
            lq_dir, gt_dir = TRAIN_LAYOUT[task_group(task)]
            lq_folder = osp.join(root, lq_dir) + suffix if lq_dir else None
            samples = task_samples(task, lq_folder, osp.join(root, gt_dir) + suffix, self.backend,
                                   list_files.get(task_group(task)))
            self.samples += [(task, lq, gt) for lq, gt in samples] * repeat[task]

    def __getitem__(self, index):
        task, lq_ref, gt_ref = self.samples[index]
        img_gt = self._read(gt_ref)
        img_lq = img_gt if lq_ref is None else self._read(lq_ref)
        img_gt, img_lq = paired_random_crop(img_gt, img_lq, self.options.gt_size, 1, gt_ref[1])
        img_gt, img_lq = augment([img_gt, img_lq], self.options.use_hflip, self.options.use_rot)
        if lq_ref is None:
            img_lq = add_gaussian_noise(img_gt, noise_sigma(task), np.random)
        return self._to_dict(task, img_lq, img_gt, lq_ref, gt_ref)


def center_crop_to_multiple(img, base):
    """Centre crop to a multiple of ``base`` a side, as PromptIR's test loaders do (``crop_img(base=16)``)."""
    height, width = img.shape[:2]
    top, left = height % base // 2, width % base // 2
    return img[top:top + height - height % base, left:left + width - width % base]


@DATASET_REGISTRY.register()
class AllInOneTestDataset(_AllInOneDataset):
    """One all-in-one task for validation or testing: degraded/clean pairs, or clean images with Gaussian noise
    seeded by ``noise_seed`` and the image name, so every run and every model sees the same noisy image.

    Pairs match by name as in training (``pair_id``): ``input/rain-N`` with ``target/norain-N`` or ``target/rain-N``,
    ``input/ID_A_B`` with ``target/ID``, equal names otherwise.

    Args:
        opt (dict): ``task`` (see ``TASK_IDS``); ``dataroot_gt``; ``dataroot_lq`` (not for denoise_*);
            ``meta_info_file`` (optional list of the degraded images, the clean ones for denoise_*);
            ``noise_seed`` (default 0); ``crop_base`` (centre crop to a multiple of it, default 1: no crop);
            ``io_backend``.
    """

    options_type = AllInOneTestOptions

    def __init__(self, opt):
        super().__init__(opt)
        self.task = self.options.task
        self.sigma = noise_sigma(self.task)
        lq_folder = None if self.sigma is not None else osp.expanduser(self.options.dataroot_lq)
        samples = task_samples(self.task, lq_folder, osp.expanduser(self.options.dataroot_gt), self.backend,
                               self.options.meta_info_file)
        self.samples = [(self.task, lq, gt) for lq, gt in samples]

    def __getitem__(self, index):
        _, lq_ref, gt_ref = self.samples[index]
        base = self.options.crop_base
        img_gt = center_crop_to_multiple(self._read(gt_ref), base)
        if lq_ref is None:
            name = osp.splitext(osp.basename(gt_ref[1]))[0]  # the same on disk and in an LMDB, wherever they are
            rng = np.random.default_rng([self.options.noise_seed, zlib.crc32(name.encode())])
            img_lq = add_gaussian_noise(img_gt, self.sigma, rng)
        else:
            img_lq = center_crop_to_multiple(self._read(lq_ref), base)
            if img_lq.shape != img_gt.shape:
                raise ValueError(f'{lq_ref[1]} {img_lq.shape} and {gt_ref[1]} {img_gt.shape} differ in size.')
        return self._to_dict(self.task, img_lq, img_gt, lq_ref, gt_ref)
