"""Importing the plugin registers every expected name, without clashing with BasicSR, and BasicSR still works."""
import os

import pytest
import torch
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

import interir_plugin  # noqa: F401
from interir_plugin.archs import MODELS, PLUGIN_ARCHS

EXPECTED = {
    ARCH_REGISTRY: ('InterIR', 'DGUNet', 'DGUNetPlus'),
    DATASET_REGISTRY: ('MultiDegradationPairedDataset',),
    MODEL_REGISTRY: ('UnfoldingRestorationModel',),
    LOSS_REGISTRY: ('EdgeLoss', 'FrequencyLoss'),
}


@pytest.mark.parametrize('registry,names', EXPECTED.items(), ids=lambda v: getattr(v, '_name', None))
def test_expected_names_are_registered_by_the_plugin(registry, names):
    for name in names:
        assert name in registry, f'{name} missing from {registry._name}'
        assert registry.get(name).__module__.startswith('interir_plugin.'), name


def test_no_plugin_name_shadows_basicsr():
    """Every name the plugin registers is absent from a BasicSR-only process (the registries refuse duplicates
    anyway; this guards against a later BasicSR adding one of our names)."""
    import subprocess
    import sys

    code = ('import importlib, sys; sys.modules.setdefault("torchvision.transforms.functional_tensor", '
            'importlib.import_module("torchvision.transforms._functional_tensor")); import basicsr; '
            'from basicsr.utils.registry import ARCH_REGISTRY as A, DATASET_REGISTRY as D, LOSS_REGISTRY as L, '
            'MODEL_REGISTRY as M; print(sorted(set(A.keys()) | set(D.keys()) | set(L.keys()) | set(M.keys())))')
    # the same alias as compat.py, done inline: importing interir_plugin.compat would register the plugin too
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    basicsr_names = set(eval(out.stdout))  # a printed list of str from our own subprocess
    plugin_names = {n for names in EXPECTED.values() for n in names}
    assert 'SRModel' in basicsr_names and 'PairedImageDataset' in basicsr_names
    assert not plugin_names & basicsr_names


def test_suffix_scan_imports_every_module_package_qualified():
    """In a fresh process, ``import interir_plugin`` alone imports every suffixed module, each under its
    package-qualified name only (a bare ``import interir_arch`` would register the classes twice)."""
    import subprocess
    import sys

    expected = {f'interir_plugin.{pkg}.{name[:-3]}'
                for pkg, suffix in (('archs', '_arch'), ('losses', '_loss'), ('data', '_dataset'), ('models', '_model'))
                for name in os.listdir(os.path.join(os.path.dirname(interir_plugin.__file__), pkg))
                if name.endswith(f'{suffix}.py')}
    assert len(expected) >= 5  # interir, dgunet, multistage loss, dataset, model: the scan finds the files
    code = 'import sys, interir_plugin; print(sorted(sys.modules))'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = set(eval(out.stdout))  # a printed list of str from our own subprocess
    assert not expected - loaded, f'not imported by the package: {sorted(expected - loaded)}'
    bare = {name.rsplit('.', 1)[1] for name in expected} & loaded
    assert not bare, f'imported under a bare name: {sorted(bare)}'


def test_basicsr_own_archs_still_build_and_run():
    net = build_network({'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_conv': 2,
                         'upscale': 2})
    assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)
    net = build_network({'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                         'num_grow_ch': 4})
    assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)


def test_every_plugin_arch_is_in_the_mmengine_registry():
    assert set(PLUGIN_ARCHS) >= {'InterIR', 'DGUNet', 'DGUNetPlus'}
    from mmengine.registry import MODELS as ROOT

    for name in PLUGIN_ARCHS:
        assert MODELS.get(name) is ARCH_REGISTRY.get(name)
    net = MODELS.build(dict(type='DGUNet', n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4))
    assert type(net).__name__ == 'DGUNet'
    assert ROOT.build(dict(type='interir_plugin.DGUNet', n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4))
