"""Packaging for interir_plugin. BasicSR is deliberately not in ``install_requires``: installing the plugin must
never replace a BasicSR the user already has (git master, ``basicsr-fixed``); fresh environments take the
``basicsr`` extra. See the README, "Install"."""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    with open(os.path.join(HERE, 'interir_plugin', 'version.py'), encoding='utf-8') as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def read_readme():
    with open(os.path.join(HERE, 'README.md'), encoding='utf-8') as f:
        return f.read()


setup(
    name='interir_plugin',
    version=read_version(),
    description='InterIR and DGUNet for multi-degradation image restoration, as a BasicSR plugin',
    long_description=read_readme(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    # datasets_meta/ (protocol files) ships inside the package so protocol names resolve from a wheel too.
    packages=[*find_packages(include=['interir_plugin', 'interir_plugin.*']), 'interir_plugin.datasets_meta'],
    package_dir={'interir_plugin.datasets_meta': 'datasets_meta'},
    # the shipped weights (interir_plugin/weights/: manifest.yml and its files, each <= 5 MB, SHA-256 checked on load)
    package_data={'interir_plugin.datasets_meta': ['*.yml', '*/*.txt'],
                  'interir_plugin.weights': ['manifest.yml', '*.pth']},
    install_requires=[
        'torch>=2.1',
        'torchvision>=0.16',
        'mmengine>=0.10',
        'lmdb',
        'opencv-python',
        'numpy',
        'pyyaml',
        'tqdm',
        'matplotlib',
        # the photos MiniCDD (`interir prepare minicdd`, `interir demo`) is made from: scikit-image's, and those that
        # ship with sporco and PyWavelets (docs/data.md, "Photos")
        'scikit-image',
        'sporco',
        'PyWavelets',
    ],
    extras_require={
        # BasicSR for a fresh environment. Its sdist imports torch while building: install torch first and use
        # `pip install --no-build-isolation basicsr`, as the Makefile does.
        'basicsr': ['basicsr>=1.4.2'],
        'dev': ['pytest>=7', 'pytest-xdist>=3', 'ruff>=0.4', 'scipy'],
    },
    entry_points={'console_scripts': ['interir=interir_plugin.cli:main']},
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Image Processing',
        'Framework :: Pytest',
    ],
)
