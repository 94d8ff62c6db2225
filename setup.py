"""basicsr-ea: EA-Adam, population fusion and MEASNet as BasicSR plugins.

Install with ``make venv`` (see README.md): torch must be installed before basicsr, whose sdist needs it to build.
"""
from setuptools import find_packages, setup

setup(
    name='basicsr-ea',
    version='0.1.0',
    description='EA-Adam population training, population fusion and MEASNet for BasicSR',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['basicsr_ea', 'basicsr_ea.*']),
    python_requires='>=3.10',
    install_requires=[
        'basicsr>=1.4.2',
        'torch>=2.0',
        'torchvision>=0.15',
        'lmdb>=1.0',
        'opencv-python>=4.5',
        'pyyaml>=5.1',
        'scikit-image>=0.19',
        'scipy>=1.7',
        'numpy>=1.21',
        'tqdm>=4.0',
        'addict>=2.4',
        'requests>=2.0',
        'matplotlib>=3.5',
        'tb-nightly',
        'lpips>=0.1.4',          # ships LPIPS's linear layers; the AlexNet backbone is a local file
        'dists-pytorch>=0.1',    # ships DISTS's alpha/beta; the VGG16 backbone is a local file
    ],
    extras_require={'test': ['pytest>=7', 'pytest-randomly==5.1.0']},  # pinned: the suite runs in a shuffled order
)
