"""One parametrised test over every registered plugin arch (timm style): build, forward, backward, every parameter
gets a finite gradient, outputs ordered first -> final with the input's size and channels, size errors clear,
deterministic in eval. Arch-specific behaviour is tested in test_interir.py and test_dgunet.py."""
import pytest
import torch
from basicsr.archs import build_network

from interir_plugin.archs import PLUGIN_ARCHS

#: a small configuration of every plugin arch; a new arch without an entry fails test_every_arch_has_a_config.
SMALL = {
    'InterIR': {'num_feat': 8, 'unshuffle': 2, 'num_stages': 2, 'num_experts': 2, 'expand': 1},
    'DGUNet': {'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4, 'depth': 1},
    'DGUNetPlus': {'n_feat': 8, 'scale_unetfeats': 4, 'depth': 1},
    'PlainResidualNet': {'num_feat': 8, 'unshuffle': 2, 'num_blocks': 2},
}
#: number of stage outputs of the SMALL configuration (InterIR: stages + the final image step; DGUNet: depth + 2;
#: PlainResidualNet: one image).
OUTPUTS = {'InterIR': 3, 'DGUNet': 3, 'DGUNetPlus': 3, 'PlainResidualNet': 1}
#: the arch's ``network_g`` keys of input and output channels.
CHANNEL_KEYS = {'InterIR': ('num_in_ch', 'num_out_ch'), 'DGUNet': ('in_c', 'out_c'), 'DGUNetPlus': ('in_c', 'out_c'),
                'PlainResidualNet': ('num_in_ch', 'num_out_ch')}
#: (input, output) channels each arch supports (DGUNet's stages live in the input space: in = out).
CHANNELS = {'InterIR': ((3, 3), (1, 1), (4, 3)), 'DGUNet': ((3, 3), (1, 1)), 'DGUNetPlus': ((3, 3), (1, 1)),
            'PlainResidualNet': ((3, 3), (1, 1), (4, 3))}
#: what the error for an input off the size multiple says, beyond the size: ``{h}``, ``{w}``, ``{m}`` filled in.
SIZE_ERRORS = {'InterIR': r'\(1, 3, {h}, {w}\).*size_multiple={m}', 'DGUNet': r'multiples of 8.*{h}x{w}',
               'DGUNetPlus': r'multiples of 8.*{h}x{w}', 'PlainResidualNet': r'\(1, 3, {h}, {w}\).*size_multiple={m}'}


def _build(name, **kwargs):
    net = build_network({'type': name, **SMALL[name], **kwargs})
    return net, max(net.size_multiple, getattr(net, 'min_size', 1))


def test_every_arch_has_a_config():
    assert sorted(SMALL) == sorted(PLUGIN_ARCHS) == sorted(OUTPUTS) == sorted(CHANNELS) == sorted(SIZE_ERRORS)


@pytest.mark.parametrize('name,channels', [(n, c) for n in sorted(PLUGIN_ARCHS) for c in CHANNELS[n]],
                         ids=lambda v: v if isinstance(v, str) else f'{v[0]}to{v[1]}')
def test_arch_forward_backward(name, channels):
    net, m = _build(name, **dict(zip(CHANNEL_KEYS[name], channels)))
    x = torch.rand(2, channels[0], 2 * m, 3 * m)
    extra = 0
    if getattr(net, 'recognises', False):  # training's teacher forcing: gates given, the recogniser's logits back
        outs, logits = net(x, presence=torch.ones(2, 4))
        extra = logits.square().mean()
    else:
        outs = net(x)
    assert isinstance(outs, list) and len(outs) == OUTPUTS[name]
    assert all(o.shape == (2, channels[1], 2 * m, 3 * m) and torch.isfinite(o).all() for o in outs)
    (sum(o.mean() * (k + 1) for k, o in enumerate(outs)) + extra).backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f'{name}: parameters without a finite gradient: {no_grad[:5]}'


@pytest.mark.parametrize('name', sorted(PLUGIN_ARCHS))
def test_arch_rejects_sizes_off_its_multiple_naming_the_size(name):
    net, m = _build(name)
    h, w = 5 * m, 7 * m + 1
    with pytest.raises(ValueError, match=SIZE_ERRORS[name].format(h=h, w=w, m=net.size_multiple)):
        net(torch.rand(1, 3, h, w))


@pytest.mark.parametrize('name', sorted(PLUGIN_ARCHS))
def test_arch_is_deterministic_in_eval(name):
    net, m = _build(name)
    net.eval()
    x = torch.rand(2, 3, m, 2 * m)
    with torch.no_grad():
        a, b = net(x), net(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
