"""Shared fixtures. Tests run on CPU with real photos from scikit-image's bundled sample data."""
import os

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), 'shared')

#: colour photos bundled with scikit-image (no download needed).
PHOTO_NAMES = ('astronaut', 'chelsea', 'coffee', 'rocket', 'immunohistochemistry', 'motorcycle_left')


def load_photo(name):
    """An RGB uint8 photo from scikit-image's bundled data (``motorcycle_left``: left view of the stereo pair)."""
    import skimage.data

    if name == 'motorcycle_left':
        return np.ascontiguousarray(skimage.data.stereo_motorcycle()[0])
    return np.ascontiguousarray(getattr(skimage.data, name)())


def photo_crop(name='astronaut', size=(64, 64), top=0, left=0):
    """A ``size`` crop of a bundled photo as RGB uint8."""
    img = load_photo(name)
    return img[top:top + size[0], left:left + size[1]].copy()


@pytest.fixture(autouse=True)
def _cpu_determinism():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield


@pytest.fixture
def shared_dir():
    """``../shared`` beside the repository; tests that need its reference data skip without it."""
    if not os.path.isdir(SHARED):
        pytest.skip(f'reference data folder {SHARED} is absent (it ships beside the repository in CI)')
    return SHARED
