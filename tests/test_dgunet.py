"""DGUNet / DGUNet+ port: official reference vectors, official key lists, loading routes, numerics, bad input."""
import json
import os

import pytest
import torch

import interir_plugin  # noqa: F401  (registers the archs)
from interir_plugin.archs.dgunet_arch import DGUNet, DGUNetPlus, _MergeBlock, load_official_dgunet, subspace_projection

VECTORS = {'dgunet_small_public.pt': DGUNet, 'dgunet_plus_small_public.pt': DGUNetPlus}
#: published configuration -> key list file (the denoising DGUNet shares the deblurring one)
KEY_FILES = {'deblurring_dgunet': 'deblurring_dgunet', 'denoising_dgunet': 'deblurring_dgunet',
             'deraining_dgunet': 'deraining_dgunet', 'deblurring_dgunet_plus': 'deblurring_dgunet_plus',
             'denoising_dgunet_plus': 'denoising_dgunet_plus', 'deraining_dgunet_plus': 'deraining_dgunet_plus'}
#: distinct PReLU modules in the official nets: a default argument shared by every ResBlock, plus one ``act``
#: per network (DGUNet: also one in Basic_block); our blocks each own theirs
OFFICIAL_PRELUS = {DGUNet: 3, DGUNetPlus: 2}
TINY = dict(n_feat=8, scale_unetfeats=4)


def _reference(shared_dir, name):
    return torch.load(os.path.join(shared_dir, 'reference', 'dgunet', name), weights_only=True)


def _kwargs(cls, config):
    """Our constructor kwargs from an official config: ``num_cab`` is never accepted, nor DGUNet+'s unused
    ``scale_orsnetfeats``."""
    drop = {'num_cab'} | ({'scale_orsnetfeats'} if cls is DGUNetPlus else set())
    return {k: v for k, v in config.items() if k not in drop}


def _official_file(shared_dir, name, tmp_path):
    """Write the vector's official checkpoint (``module.`` keys under ``state_dict``) to a file; return both."""
    ref = _reference(shared_dir, name)
    path = str(tmp_path / 'official.pth')
    torch.save(ref['checkpoint'], path)
    return ref, path


@pytest.mark.parametrize('name', sorted(VECTORS))
def test_reference_vectors_through_loader(shared_dir, tmp_path, name):
    cls = VECTORS[name]
    ref, path = _official_file(shared_dir, name, tmp_path)
    net = load_official_dgunet(cls(**_kwargs(cls, ref['config'])), path).eval()
    with torch.no_grad():
        outs = net(ref['input'])
    expected = ref['outputs_final_first'][::-1]  # ours are ordered first -> final
    assert len(outs) == len(expected) == 7
    errors = [(o - e).abs().max().item() for o, e in zip(outs, expected)]
    print(f'{name}: max abs error per stage {[f"{e:.1e}" for e in errors]}')
    assert max(errors) < 1e-4
    # the order matters: the first and the final official outputs differ by far more than the tolerance
    assert (expected[0] - expected[-1]).abs().max() > 1e-2


@pytest.mark.parametrize('name', sorted(VECTORS))
def test_basicsr_load_network_route(shared_dir, tmp_path, name):
    """``path.pretrain_network_g`` + ``param_key_g: state_dict``: BasicSR builds the net and strips ``module.``."""
    from basicsr.archs import build_network
    from basicsr.models.base_model import BaseModel

    cls = VECTORS[name]
    ref, path = _official_file(shared_dir, name, tmp_path)
    net = build_network({'type': cls.__name__, **_kwargs(cls, ref['config'])})
    BaseModel.__new__(BaseModel).load_network(net, path, strict=True, param_key='state_dict')
    # the same tensors as our loader's, whose outputs the test above checks against the official ones
    ours = load_official_dgunet(cls(**_kwargs(cls, ref['config'])), path).state_dict()
    loaded = net.state_dict()
    assert loaded.keys() == ours.keys() and all(torch.equal(loaded[k], ours[k]) for k in ours)


@pytest.mark.parametrize('config', sorted(KEY_FILES))
def test_official_keys_shapes_and_counts(shared_dir, config):
    folder = os.path.join(shared_dir, 'reference', 'dgunet')
    with open(os.path.join(folder, 'official_configs.json')) as f:
        official = json.load(f)[config]
    with open(os.path.join(folder, f'keys_{KEY_FILES[config]}.tsv')) as f:
        rows = [line.split('\t') for line in f.read().splitlines()[1:]]
    expected = {key: tuple(int(d) for d in shape.strip('()').split(',') if d.strip()) for key, shape in rows}
    cls = DGUNetPlus if config.endswith('_plus') else DGUNet
    with torch.device('meta'):  # up to 70 M parameters: shapes only, no memory
        net = cls(**_kwargs(cls, official['constructor_defaults']))
    state = net.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert sum(v.numel() for v in state.values()) == official['state_dict_numel']
    # parameter count: ours counts every block's own PReLU, and DGUNet's unused basic.concat12 is a buffer
    params = sum(p.numel() for p in net.parameters())
    prelu_keys = sum(1 for k in expected if k.endswith('body.1.weight'))
    concat12 = state['basic.concat12.weight'].numel() if cls is DGUNet else 0
    print(f'{config}: ours {params:,} params, official {official["params"]:,} '
          f'(+{prelu_keys - OFFICIAL_PRELUS[cls]} separate PReLUs, -{concat12:,} concat12 as buffer)')
    assert params == official['params'] + prelu_keys - OFFICIAL_PRELUS[cls] - concat12


@pytest.mark.parametrize('cls', [DGUNet, DGUNetPlus])
def test_wrong_input_channel_count_names_the_shape(cls):
    """(Outputs, gradients, depth and channel counts: test_archs.py.)"""
    net = cls(in_c=1, out_c=1, **TINY, depth=1)
    with pytest.raises(ValueError, match=r'B x 1 x H x W input, got \(1, 3, 16, 16\)'):
        net(torch.rand(1, 3, 16, 16))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match='in_c'):
        DGUNet(in_c=3, out_c=1)
    with pytest.raises(ValueError, match='depth'):
        DGUNetPlus(depth=0)
    with pytest.raises(TypeError, match='num_cab'):
        DGUNet(num_cab=8)
    with pytest.raises(TypeError, match='scale_orsnetfeats'):
        DGUNetPlus(scale_orsnetfeats=32)


def test_bf16_autocast_runs_and_projection_is_float32(monkeypatch):
    solve_dtypes = []
    solve = torch.linalg.solve_ex

    def recording_solve(a, b, **kwargs):
        solve_dtypes.append((a.dtype, b.dtype))
        return solve(a, b, **kwargs)

    monkeypatch.setattr(torch.linalg, 'solve_ex', recording_solve)
    net = DGUNetPlus(**TINY, depth=1)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = net(torch.rand(1, 3, 16, 16))
    assert len(solve_dtypes) == 2  # merge blocks of stages 2 and 3
    assert set(solve_dtypes) == {(torch.float32, torch.float32)}
    assert all(o.isfinite().all() for o in outs)


@pytest.mark.parametrize('basis', ['zero', 'rank_one'])
def test_singular_basis_does_not_crash(basis):
    block = _MergeBlock(8)
    with torch.no_grad():
        if basis == 'zero':
            block.subnet.weight.zero_()
            block.subnet.bias.zero_()
        else:  # all 16 basis maps identical
            block.subnet.weight.copy_(block.subnet.weight[:1].expand_as(block.subnet.weight))
            block.subnet.bias.fill_(0.1)
    x, bridge = torch.rand(2, 8, 8, 8, requires_grad=True), torch.rand(2, 8, 8, 8, requires_grad=True)
    v_t = block.subnet(torch.cat([x, bridge], 1)).flatten(2)
    with pytest.raises(torch.linalg.LinAlgError):  # the official explicit inverse fails here
        torch.linalg.inv(v_t @ v_t.transpose(1, 2))
    out = block(x, bridge)
    out.sum().backward()
    assert out.isfinite().all() and x.grad.isfinite().all() and bridge.grad.isfinite().all()
    assert block.subnet.weight.grad.isfinite().all()


def test_projection_matches_exact_inverse_when_well_conditioned():
    basis, feat = torch.randn(2, 16, 12, 12), torch.randn(2, 5, 12, 12)
    v_t = basis.double().flatten(2)
    v_t = v_t / (v_t.abs().sum(2, keepdim=True) + 1e-6)
    exact = (v_t.transpose(1, 2) @ torch.linalg.inv(v_t @ v_t.transpose(1, 2)) @ v_t
             @ feat.double().flatten(2).transpose(1, 2)).transpose(1, 2).reshape(feat.shape)
    ours = subspace_projection(basis, feat)
    assert ours.dtype == torch.float32
    assert (ours.double() - exact).abs().max() < 1e-4 * exact.abs().max()


def test_loader_errors_name_file_and_keys(shared_dir, tmp_path):
    ref, path = _official_file(shared_dir, 'dgunet_small_public.pt', tmp_path)
    wrong_width = DGUNet(**{**_kwargs(DGUNet, ref['config']), 'n_feat': 24})
    with pytest.raises(ValueError, match=r'official\.pth.*shape mismatches \(\d+\): .*shallow_feat'):
        load_official_dgunet(wrong_width, path)
    with pytest.raises(ValueError,
                       match=r'missing keys \(\d+\): r1.*unexpected keys \(\d+\): basic\.r1.*DGUNet checkpoint'):
        load_official_dgunet(DGUNetPlus(**_kwargs(DGUNetPlus, ref['config'])), path)
    with pytest.raises(KeyError, match=r"official\.pth.*'params'"):
        load_official_dgunet(DGUNet(**_kwargs(DGUNet, ref['config'])), path, param_key='params')
    with pytest.raises(FileNotFoundError, match='nothing.pth'):
        load_official_dgunet(wrong_width, str(tmp_path / 'nothing.pth'))


def test_loader_reads_bare_and_basicsr_state_dicts(shared_dir, tmp_path):
    ref = _reference(shared_dir, 'dgunet_small_public.pt')
    state = ref['checkpoint']['state_dict']
    bare, wrapped = str(tmp_path / 'bare.pth'), str(tmp_path / 'basicsr.pth')
    torch.save(state, bare)
    torch.save({'params': {k.removeprefix('module.'): v for k, v in state.items()}}, wrapped)
    for path, key in ((bare, 'state_dict'), (wrapped, 'params')):
        net = load_official_dgunet(DGUNet(**_kwargs(DGUNet, ref['config'])), path, param_key=key)
        assert torch.equal(net.basic.r1, state['module.basic.r1'])
        assert torch.equal(net.tail.weight, state['module.tail.weight'])
