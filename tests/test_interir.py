"""InterIR and EConv: shapes and ordering, gradients, fused = unfused, interpretable outputs, numerics, budget,
the presets of docs/interir.md."""
import math
import os
import re
import types

import pytest
import torch
import yaml

import interir_plugin  # noqa: F401  (registers the archs)
from conftest import photo_crop
from interir_plugin.archs.econv import PRIOR_NAMES, EConv, ExplainableBlock, Pointwise, set_fused
from interir_plugin.archs.image_ops import box_filter, max_filter
from interir_plugin.archs.interir_arch import InterIR
from interir_plugin.archs.physical_head import PhysicalHead
from interir_plugin.archs.plain_arch import PlainResidualNet
from interir_plugin.utils.padding import crop_to, pad_to_multiple
from interir_plugin.utils.presence import presence_targets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: a tiny net: every part of the algorithm, two stages plus the final image step, at 1/4 resolution
TINY = dict(num_feat=8, unshuffle=4, num_stages=2, num_experts=2, expand=1)
AUX_KEYS = ('alpha', 'gamma', 'eta', 'delta', 'P', 'Q', 'residual')  # tensors; ``maps`` (dicts) checked apart
MAP_KEYS = ('gain', 'transmission', 'airlight', 'layer', 'streak', 'presence')


def _randomise_head(net, std=0.05):
    """Give the physical head's zero-initialised last layers random weights (at initialisation the head is the
    identity, every output equals the input and no gradient reaches the trunk)."""
    with torch.no_grad():
        for layer in (net.head.maps[-1], net.head.layer[0], net.head.globals[-1], net.head.detail,
                      net.head.detail_full[-1]):
            layer.weight.normal_(0, std)
    return net


def _photo_batch(b, h, w):
    """``b`` real photo crops as a float batch in [0, 1] (RGB)."""
    names = ('astronaut', 'chelsea', 'coffee', 'rocket')
    crops = [photo_crop(names[i % len(names)], (h, w), 20 * i, 30 * i) for i in range(b)]
    return torch.stack([torch.from_numpy(c).permute(2, 0, 1).float() / 255 for c in crops])


@pytest.mark.parametrize('head', ['physical', 'residual'])
def test_odd_size_batch3_shapes_and_order(head):
    net = InterIR(head=head, recognise=head == 'physical', **TINY)
    if head == 'physical':
        _randomise_head(net)
    x = _photo_batch(3, 37, 53)
    padded, size = pad_to_multiple(x, net.size_multiple)
    assert padded.shape[-2:] == (40, 56)
    feats = []  # the features each step hands to the head, in execution order
    hooks = [m.register_forward_hook(lambda m, i, o: feats.append(o[0])) for m in (*net.stages, net.final)]
    gates = torch.ones(3, 4) if head == 'physical' else None  # the head with every map on
    with torch.no_grad():
        outs = net(padded) if gates is None else net(padded, presence=gates)[0]
    for h in hooks:
        h.remove()
    assert len(outs) == len(feats) == TINY['num_stages'] + 1
    for t, (out, feat) in enumerate(zip(outs, feats)):  # outputs[t] = head(D, x_t), first -> final
        assert out.shape == (3, 3, 40, 56)
        expected = net.head(padded, feat, None, gates)[0] if head == 'physical' else padded + net.tail(feat)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6, msg=f'output {t} out of order')
    assert all(o.shape == (3, 3, 37, 53) for o in crop_to(outs, size))
    assert (outs[0] - outs[-1]).abs().max() > 1e-6  # the stages do differ, so the order check above has teeth


@pytest.mark.parametrize('kwargs', [dict(num_feat=0), dict(unshuffle=0), dict(num_stages=-1), dict(expand=1.5),
                                    dict(num_blocks=0), dict(num_experts=0), dict(temperature=0.0),
                                    dict(freq_bound=-1.0), dict(eta=0.0), dict(eta=True), dict(head='tail')])
def test_bad_kwargs_raise(kwargs):
    key = next(iter(kwargs))
    with pytest.raises(ValueError, match=key):
        InterIR(**{**TINY, **kwargs})


@pytest.mark.parametrize('in_ch, out_ch, num_blocks, head', [(3, 3, 2, 'physical'), (1, 1, 1, 'physical'),
                                                              (4, 3, 1, 'physical'), (3, 3, 1, 'residual')])
def test_every_parameter_gets_a_nonzero_gradient(in_ch, out_ch, num_blocks, head):
    """Beyond test_archs.py (finite gradients): none is zero, with several blocks, channel counts and both heads
    (the physical head's last layers randomised: at initialisation only they get a gradient)."""
    net = InterIR(num_in_ch=in_ch, num_out_ch=out_ch, num_blocks=num_blocks, head=head,
                  recognise=head == 'physical', **TINY)
    if head == 'physical':
        _randomise_head(net)
    x = torch.rand(2, in_ch, 16, 24)
    if head == 'physical':  # teacher forcing: every map on, and the recogniser's logits in the loss
        outs, logits = net(x, presence=torch.ones(2, 4))
        (sum(o.square().mean() for o in outs) + logits.square().mean()).backward()
    else:
        sum(o.square().mean() for o in net(x)).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f'{name} has an all-zero gradient'


def test_routing_by_presence_follows_the_gates():
    """With route_by_presence every EConv's routing changes with the presence gates alone (same image), and the
    router refuses a missing condition."""
    torch.manual_seed(0)
    net = InterIR(**TINY, route_by_presence=True).eval()
    x = _photo_batch(1, 32, 48)
    with torch.no_grad():
        routes = [net(x, return_aux=True, presence=torch.tensor([g]))[1]['alpha'][0] for g in ([1., 0, 0, 0],
                                                                                             [0., 0, 1, 0])]
    assert (routes[0] - routes[1]).abs().max() > 1e-4
    plain = InterIR(**TINY).eval()
    with torch.no_grad():
        same = [plain(x, return_aux=True, presence=torch.tensor([g]))[1]['alpha'][0] for g in ([1., 0, 0, 0],
                                                                                            [0., 0, 1, 0])]
    torch.testing.assert_close(same[0], same[1], rtol=0, atol=0)  # without it the gates do not reach the routing
    conv = next(m for m in net.modules() if isinstance(m, EConv))
    with pytest.raises(ValueError, match='condition'):
        conv(torch.rand(1, conv.in_ch, 8, 8))
    with pytest.raises(ValueError, match='route_by_presence'):
        InterIR(**TINY, route_by_presence=True, recognise=False)


def test_streaks_removed_only_where_the_active_set_marks():
    """With streaks_by_active_set the head's streak layer is the one without it times mean_c(1 - Delta), upsampled:
    Delta = 1 everywhere removes nothing, Delta = 0 removes all of it."""
    torch.manual_seed(0)
    head = PhysicalHead(8, 3, 4, recognise=False)
    _randomise_head(types.SimpleNamespace(head=head))
    d, x = _photo_batch(2, 32, 48), torch.randn(2, 8, 8, 12)
    gates = torch.tensor([[0., 0, 1, 0], [0., 0, 0, 1]])
    full = head(d, x, None, gates)[1]['streak']
    none = head(d, x, None, gates, delta=torch.ones(2, 8, 8, 12))[1]['streak']
    whole = head(d, x, None, gates, delta=torch.zeros(2, 8, 8, 12))[1]['streak']
    assert full.abs().max() > 1e-3 and none.abs().max() == 0
    torch.testing.assert_close(whole, full, rtol=1e-5, atol=1e-6)
    half = torch.zeros(2, 8, 8, 12)
    half[..., :6] = 1  # the left half of the cells says "not a streak"
    part = head(d, x, None, gates, delta=half)[1]['streak']
    assert part[..., :20].abs().max() == 0 and (part[..., 28:] - full[..., 28:]).abs().max() < 1e-5


def test_econv_fused_equals_unfused():
    conv = EConv(5, 7, num_experts=3, temperature=0.7)
    x = torch.randn(3, 5, 11, 13)
    assert conv.fused  # the default path
    fused = conv(x)
    conv.fused = False
    unfused = conv(x)
    assert fused.shape == (3, 7, 11, 13)
    torch.testing.assert_close(fused, unfused, rtol=0, atol=1e-5)
    # per-image kernels: the images of one batch do not share a kernel
    alpha, gamma = conv.route(x)
    k = conv.kernels(alpha, gamma)
    assert k.shape == (3, 7, 5, 3, 3) and (k[0] - k[1]).abs().max() > 1e-4
    # the prior bank is the documented operators: identity tap at the centre, Laplacian sums to zero
    assert len(PRIOR_NAMES) == conv.priors.shape[0] == gamma.shape[1]
    assert conv.priors[0, 1, 1] == 1 and conv.priors[3].sum() == 0


def test_physical_head_starts_as_the_identity():
    """At initialisation G = t = 1 and R is only the small high-pass term (w = sigmoid(-3)): every stage output is
    the input but for it; maps in range."""
    net = InterIR(**TINY).eval()
    x = _photo_batch(2, 32, 48)
    with torch.no_grad():
        outs, aux = net(x, return_aux=True, presence=torch.ones(2, 4))
    for o in outs:
        assert (o - x).abs().mean() < 0.01 and (o - x).abs().max() < 0.1
    maps = aux['maps'][-1]
    assert set(maps) == set(MAP_KEYS)
    assert (maps['gain'] == 1).all() and (maps['transmission'] == 1).all() and (maps['layer'].abs() < 0.1).all()
    assert (maps['streak'] >= 0).all() and (maps['presence'] == 1).all()
    torch.testing.assert_close(maps['airlight'], torch.full((2, 3, 1, 1), 0.8), rtol=0, atol=3e-3)


@pytest.mark.parametrize('arch', ['InterIR', 'PlainResidualNet'])
def test_nothing_present_nothing_changed(arch):
    """With every presence gate off the physical head returns D itself, whatever its weights (trained or random):
    gain and transmission are 1, the layer is 0. With the recogniser deciding, the gates are its probabilities."""
    net = _randomise_head(InterIR(**TINY) if arch == 'InterIR' else PlainResidualNet(num_feat=8, num_blocks=1), 0.5)
    net.eval()
    x = _photo_batch(2, 32, 48)
    with torch.no_grad():
        outs, logits = net(x, presence=torch.zeros(2, 4))
        assert logits.shape == (2, 4)
        for o in outs:
            torch.testing.assert_close(o, x, rtol=0, atol=1e-6)
        moved = net(x, presence=torch.ones(2, 4))[0][-1]
        assert (moved - x).abs().mean() > 1e-3  # the random maps do act when present
        if arch == 'InterIR':
            gates = net(x, return_aux=True)[1]['maps'][-1]['presence']
            torch.testing.assert_close(gates, torch.sigmoid(logits))


def test_presence_targets_of_labels():
    """CDD-11 labels give their parts; a label with any other part gives all gates on and known = 0."""
    targets, known = presence_targets(['low_haze_rain', 'snow', 'noise', 'rain_blur', 'clear'])
    assert targets.tolist() == [[1, 1, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]]
    assert known.tolist() == [1, 1, 0, 0, 1]  # a clean image: nothing present, and the recogniser learns so


def test_physical_head_inverts_the_composite():
    """Given the true maps, the head's inversion ``((D - A) / t + A - R) / G`` recovers J from ``(J G + R) t +
    A (1 - t)``: the formula the head applies, checked on maps forced through its parameters' outputs."""
    net = InterIR(**TINY).eval()
    head = net.head
    j = _photo_batch(1, 32, 32)
    g, t, a = 0.4, 0.6, 0.9
    r = 0.05 * torch.rand(1, 3, 32, 32)
    d = (j * g + r) * t + a * (1 - t)
    with torch.no_grad():  # constant maps: bias only (log 1/G, log 1/t are inside 3 tanh(./3); undo it)
        head.detail.bias.fill_(-40.0)  # w_n = w_s = 0: no high-pass terms
        head.maps[-1].bias.copy_(3 * torch.atanh(torch.tensor([-math.log(g), -math.log(t)]) / 3))
        head.globals[-1].bias.copy_(torch.tensor([0.0, 0.0, *[math.log(a / (1 - a))] * 3]))
        image, maps = head(d, torch.zeros(1, TINY['num_feat'], 8, 8))
    torch.testing.assert_close(maps['gain'], torch.full_like(maps['gain'], g), rtol=1e-5, atol=1e-5)
    # the head's layer R is 0 here, so the true additive layer r stays in, amplified by 1 / G
    torch.testing.assert_close(image, j + r / g, rtol=1e-4, atol=1e-4)


def test_transmission_never_below_the_dark_channel_bound():
    """However strong the haze the head estimates, ``t >= 1 - dc_D / A``: the dehazed ``J G + R = (D - A) / t + A``
    is never negative (a clean photo read as hazy loses contrast, not sign)."""
    net = InterIR(**TINY).eval()
    head = net.head
    d = _photo_batch(2, 32, 32)
    with torch.no_grad():
        head.maps[-1].bias.fill_(50.0)  # tau at its 3 tanh bound everywhere: t = exp(-3) unless held up
        head.detail.bias.fill_(-40.0)  # no high-pass terms
        presence = torch.tensor([[0.0, 1.0, 0.0, 0.0]] * 2)  # haze only: G = 1, R = 0
        image, maps = head(d, torch.zeros(2, TINY['num_feat'], 8, 8), presence=presence)
    bound = (1 - (d / maps['airlight']).amin(1, keepdim=True)).clamp_min(0.05)
    assert image.min() > -1e-5 and (maps['transmission'] >= bound - 1e-5).all()
    unbounded = (d - maps['airlight']) * math.exp(3) + maps['airlight']  # what t = exp(-3) would have given
    assert unbounded.min() < -1


def test_flakes_are_removed_before_the_noise_bands():
    """The noise bands are measured on ``D - R_streak``: a flake the streak layer takes out leaves no ring. With every
    weight at 1 on a flat image plus one 3 x 3 flake the head returns the flat image (measured on ``D`` itself the
    bands would have put a dark hole and a bright halo around it)."""
    net = InterIR(**TINY).eval()
    d = torch.full((1, 3, 32, 32), 0.3)
    d[..., 14:17, 14:17] += 0.6
    with torch.no_grad():
        net.head.detail.bias.fill_(40.0)  # w_n = w_s = w'_n = 1
        presence = torch.tensor([[1.0, 0.0, 0.0, 1.0]])  # low light and snow: noise bands and streak layer on
        image, maps = net.head(d, torch.zeros(1, TINY['num_feat'], 8, 8), presence=presence)
    torch.testing.assert_close(maps['streak'][..., 14:17, 14:17], torch.full((1, 3, 3, 3), 0.6), rtol=0, atol=1e-5)
    torch.testing.assert_close(image, torch.full_like(image, 0.3), rtol=0, atol=1e-5)


@pytest.mark.parametrize('shape', [(2, 3, 16, 24), (1, 1, 13, 7), (1, 2, 5, 5)])
@pytest.mark.parametrize('k', [3, 5, 7, 9])
def test_filters_equal_the_pooling_they_replace(shape, k):
    """The head's max and box filters give torch's stride-1 pooling values, windows larger than the image included."""
    x = torch.randn(shape)
    assert torch.equal(max_filter(x, k), torch.nn.functional.max_pool2d(x, k, 1, k // 2))
    want = torch.nn.functional.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)
    assert torch.allclose(box_filter(x, k), want, atol=1e-6, rtol=0)


def test_tail_starts_without_subpixel_grid():
    """ICNR: at initialisation every s x s block of the residual head's tail is constant (no s-periodic grid)."""
    net = InterIR(head='residual', recognise=False, **TINY)
    s = net.size_multiple
    feat = torch.randn(2, net.tail[0].in_channels, 5, 7)
    out = net.tail(feat)
    blocks = out.unflatten(2, (5, s)).unflatten(4, (7, s))  # B x C x 5 x s x 7 x s
    assert (blocks - blocks[:, :, :, :1, :, :1]).abs().max() < 1e-6
    assert out.std() > 0  # a real (not zero) initialisation


@pytest.mark.parametrize('batch', [1, 3])
def test_pointwise_equals_conv1x1(batch):
    pw = Pointwise(6, 10)
    conv = torch.nn.Conv2d(6, 10, 1)
    conv.load_state_dict(pw.state_dict())  # same keys and shapes as nn.Conv2d
    x = torch.randn(batch, 6, 7, 9, requires_grad=True)
    y_pw, y_conv = pw(x), conv(x)
    torch.testing.assert_close(y_pw, y_conv, rtol=0, atol=1e-5)
    g = torch.randn_like(y_pw)
    grads_pw = torch.autograd.grad(y_pw, (x, pw.weight, pw.bias), g)
    grads_conv = torch.autograd.grad(y_conv, (x, conv.weight, conv.bias), g)
    for a, b in zip(grads_pw, grads_conv):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_interir_fused_equals_unfused(mode):
    net = InterIR(**TINY).train(mode == 'train')
    x = _photo_batch(2, 32, 48)
    with torch.no_grad():
        fused = net(x)
        unfused = set_fused(net, False)(x)
    for a, b in zip(fused, unfused):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_return_aux_keys_shapes_and_ranges():
    b, c, h, w = 3, TINY['num_feat'], 32, 48
    net = InterIR(**TINY).eval()
    with torch.no_grad():
        outs, aux = net(_photo_batch(b, h, w), return_aux=True)
        plain = net(_photo_batch(b, h, w))
    assert set(aux) == {*AUX_KEYS, 'maps', 'presence_logits'} and aux['presence_logits'].shape == (b, 4)
    steps = TINY['num_stages'] + 1
    assert all(len(aux[k]) == steps == len(outs) for k in (*AUX_KEYS, 'maps'))
    for a, p in zip(outs, plain):  # asking for aux does not change the images
        torch.testing.assert_close(a, p, rtol=0, atol=0)
    s, m = TINY['unshuffle'], TINY['num_experts']
    for t in range(steps):
        n_econv = 2 * (8 if t < steps - 1 else 5)  # two per EB; a stage has 8 EBs, the final image step 5
        alpha, gamma = aux['alpha'][t], aux['gamma'][t]
        assert alpha.shape == (b, n_econv, m) and gamma.shape == (b, n_econv, len(PRIOR_NAMES))
        torch.testing.assert_close(alpha.sum(-1), torch.ones(b, n_econv), rtol=0, atol=1e-5)
        assert (gamma > 0).all() and (gamma < 1).all()
        assert aux['eta'][t].shape == () and aux['eta'][t] > 0
        delta = aux['delta'][t]
        assert delta.shape == (b, c, h // s, w // s) and delta.min() >= 0 and delta.max() <= 1
        assert aux['P'][t].shape == (b, c, h // s, h // s) and aux['Q'][t].shape == (b, c, w // s, w // s)
        # the factors are normalised: spectral norm at most 1 (Schur bound)
        assert torch.linalg.matrix_norm(aux['P'][t], ord=2).max() <= 1 + 1e-4
        assert torch.linalg.matrix_norm(aux['Q'][t], ord=2).max() <= 1 + 1e-4
        assert aux['residual'][t].shape == (b,) and (aux['residual'][t] >= 0).all()
        maps = aux['maps'][t]
        assert maps['gain'].shape == maps['transmission'].shape == (b, 1, h, w)
        assert maps['airlight'].shape == (b, 3, 1, 1) and maps['layer'].shape == (b, 3, h, w)
        bound = math.exp(3)
        for key in ('gain', 'transmission'):
            assert (maps[key] >= 1 / bound).all() and (maps[key] <= bound).all()
    # routing is not kept once the call returns
    assert all(e.routing is None and not e.keep_routing for e in net.modules() if isinstance(e, EConv))


def test_residual_is_the_data_fidelity_norm():
    """``residual`` equals ``||P x Q - z||`` recomputed from the final features and the returned factors."""
    net = InterIR(**TINY).eval()
    x = _photo_batch(2, 32, 32)
    feats = []
    hook = net.final.register_forward_hook(lambda m, i, o: feats.append(o[0]))
    with torch.no_grad():
        _, aux = net(x, return_aux=True)
        z = net.lift(x)
    hook.remove()
    p, q = aux['P'][-1], aux['Q'][-1]
    expected = (p @ feats[0] @ q - z).flatten(1).norm(dim=1)
    torch.testing.assert_close(aux['residual'][-1], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('fill', ['zeros', 'ones', 'constant', 'channel_constant'])
def test_constant_inputs_stay_finite(fill):
    net = InterIR(**TINY)
    x = {'zeros': torch.zeros(2, 3, 16, 16), 'ones': torch.ones(2, 3, 16, 16),
         'constant': torch.full((2, 3, 16, 16), 0.37),
         'channel_constant': torch.tensor([0.1, 0.5, 0.9]).view(1, 3, 1, 1).expand(2, 3, 16, 16)}[fill]
    outs, aux = net(x, return_aux=True, presence=torch.ones(2, 4))
    assert all(torch.isfinite(o).all() for o in outs)
    assert all(torch.isfinite(v).all() for key in AUX_KEYS for v in aux[key])
    assert all(torch.isfinite(v).all() for maps in aux['maps'] for v in maps.values())
    assert torch.isfinite(aux['presence_logits']).all()  # constant images: zero std, zero high-pass
    (sum(o.mean() for o in outs) + aux['presence_logits'].mean()).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_bf16_autocast_on_cpu():
    net = InterIR(**TINY).eval()
    x = _photo_batch(2, 32, 32)
    with torch.no_grad():
        ref = net(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            outs, aux = net(x, return_aux=True)
    assert all(torch.isfinite(o).all() for o in outs)
    assert aux['P'][0].dtype == aux['residual'][0].dtype == torch.float32  # factor algebra stays in float32
    err = (outs[-1].float() - ref[-1]).abs().mean().item()
    assert err < 2e-2, f'bf16 autocast drifts from float32 by {err:.3g} on average'


def test_frequency_branch_is_bounded_and_float32_inside():
    block = ExplainableBlock(4, num_experts=2, expand=1, freq_bound=0.25)
    y = block.freq(100 * torch.randn(2, 4, 8, 8))
    assert y.abs().max() <= 0.25
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert block.freq(torch.randn(1, 4, 8, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_default_preset_within_budget():
    from interir_plugin.utils.complexity import model_complexity

    info = model_complexity(InterIR(), (3, 256, 256))
    print(f'InterIR() at 3x256x256: {info["mparams"]:.2f} M params, {info["gmacs"]:.2f} G multiply-adds')
    assert info['params'] <= 15e6 and info['macs'] <= 100e9
    assert info['macs'] > 5e9  # the counter did see the convolutions and the factor products


def _doc_presets():
    """``{name: network_g}`` from the yaml blocks of docs/interir.md whose first line is ``# <preset name>``."""
    with open(os.path.join(REPO, 'docs', 'interir.md'), encoding='utf-8') as f:
        blocks = re.findall(r'```yaml\n# (\S+)\n(.*?)```', f.read(), flags=re.S)
    return {name: yaml.safe_load(body)['network_g'] for name, body in blocks}


def test_doc_presets_build():
    from basicsr.archs import build_network

    presets = _doc_presets()
    assert sorted(presets) == ['InterIR', 'InterIR-L', 'InterIR-S']
    # the default block spells out exactly the constructor defaults
    default = build_network(dict(presets['InterIR']))
    assert sum(p.numel() for p in default.parameters()) == sum(p.numel() for p in InterIR().parameters())
    small = build_network(dict(presets['InterIR-S']))
    assert 0.5e6 <= sum(p.numel() for p in small.parameters()) <= 2e6  # the CPU size class (0.88 M in the table)
    large = build_network(dict(presets['InterIR-L']))
    assert sum(p.numel() for p in large.parameters()) > 15e6
    for net in (small, large):
        with torch.no_grad():
            outs = net.eval()(torch.rand(1, 3, 2 * net.size_multiple, 3 * net.size_multiple))
        assert len(outs) == len(net.stages) + 1 and torch.isfinite(outs[-1]).all()

