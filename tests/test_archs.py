"""One parametrised test over every registered plugin arch (timm style): build, forward, backward, every parameter
gets a gradient, no NaN, outputs ordered first -> final with the input's size, size errors clear."""
import pytest
import torch
from basicsr.archs import build_network

from interir_plugin.archs import PLUGIN_ARCHS

#: a small configuration of every plugin arch; a new arch without an entry fails test_every_arch_has_a_config.
SMALL = {
    'InterIR': {'num_feat': 8, 'unshuffle': 2, 'num_stages': 2, 'num_experts': 2, 'expand': 1},
    'DGUNet': {'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4, 'depth': 1},
    'DGUNetPlus': {'n_feat': 8, 'scale_unetfeats': 4, 'depth': 1},
}


def test_every_arch_has_a_config():
    assert sorted(SMALL) == sorted(PLUGIN_ARCHS)


@pytest.mark.parametrize('name', sorted(PLUGIN_ARCHS))
def test_arch_forward_backward(name):
    net = build_network({'type': name, **SMALL[name]})
    m = max(net.size_multiple, getattr(net, 'min_size', 1))
    x = torch.rand(2, 3, 2 * m, 3 * m)
    outs = net(x)
    assert isinstance(outs, list) and len(outs) >= 2
    assert all(o.shape == x.shape and torch.isfinite(o).all() for o in outs)
    sum(o.mean() * (k + 1) for k, o in enumerate(outs)).backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f'{name}: parameters without a finite gradient: {no_grad[:5]}'


@pytest.mark.parametrize('name', sorted(PLUGIN_ARCHS))
def test_arch_rejects_sizes_off_its_multiple_naming_the_size(name):
    net = build_network({'type': name, **SMALL[name]})
    m = max(net.size_multiple, getattr(net, 'min_size', 1))
    with pytest.raises(ValueError, match=f'{7 * m + 1}'):
        net(torch.rand(1, 3, 5 * m, 7 * m + 1))


@pytest.mark.parametrize('name', sorted(PLUGIN_ARCHS))
def test_arch_is_deterministic_in_eval(name):
    net = build_network({'type': name, **SMALL[name]}).eval()
    m = max(net.size_multiple, getattr(net, 'min_size', 1))
    x = torch.rand(1, 3, m, m)
    with torch.no_grad():
        assert torch.equal(net(x)[-1], net(x)[-1])
