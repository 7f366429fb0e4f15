"""``interir audit``: every metric on constructed cases whose answer is known, then the command end to end."""
import json
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from basicsr.archs import build_network
from torch import nn

from conftest import photo_crop, write_yaml
from interir_plugin.archs.econv import EConv
from interir_plugin.archs.interir_arch import InterIR
from interir_plugin.cli import main
from interir_plugin.data.degradations import CATEGORY_PARTS, synthesize
from interir_plugin.tools import audit as A
from interir_plugin.tools.audit import data as audit_data
from interir_plugin.tools.audit import summaries

TINY_INTERIR = {'type': 'InterIR', 'num_feat': 8, 'num_stages': 1, 'num_experts': 2, 'expand': 1}
TINY_DGUNET = {'type': 'DGUNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4, 'depth': 1}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(2)


# ------------------------------------------------------------------------------------------- metric functions
def test_auc_known_answers_and_brute_force():
    assert A.auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert A.auc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert A.auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5  # ties count half
    assert A.auc([1, 2, 3], [1, 1, 1]) is None and A.auc([1, 2, 3], [0, 0, 0]) is None
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 5, 60).astype(float), rng.random(60) < 0.4  # many ties
    pos, neg = scores[labels], scores[~labels]
    brute = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size)
    assert A.auc(scores, labels) == pytest.approx(brute)
    with pytest.raises(ValueError, match='NaN'):
        A.auc([np.nan, 1.0], [0, 1])


def test_routing_equal_to_one_hot_label_is_perfect_and_shuffled_is_chance():
    labels = [f'l{i % 4}' for i in range(200)]
    one_hot = np.eye(4)[[int(v[1]) for v in labels]]
    accuracy, names, confusion = A.nearest_centroid_accuracy(one_hot, labels)
    assert accuracy == 1.0 and names == ['l0', 'l1', 'l2', 'l3'] and np.trace(confusion) == 200
    assert A.chance_rate(labels) == 0.25
    rng = np.random.default_rng(1)
    shuffled = [A.nearest_centroid_accuracy(one_hot[rng.permutation(200)], labels)[0] for _ in range(10)]
    assert abs(np.mean(shuffled) - 0.25) < 0.06  # routing unrelated to the label: chance
    assert A.chance_rate(['a', 'a', 'a', 'b']) == 0.75  # unbalanced: the majority's share


def test_scene_dominated_routing_is_chance_when_the_scene_leaves_whole():
    """Routing = scene embedding + noise, unrelated to the label, each scene in every label (the audit's design):
    holding a scene out with all its versions gives chance; leaving one version out would not."""
    rng = np.random.default_rng(3)
    scenes, labels = np.repeat(np.arange(6), 4), np.tile(np.arange(4), 6)
    rows = [rng.normal(size=(6, 8))[scenes] * 10 + rng.normal(size=(24, 8)) for _ in range(30)]
    held_out = [A.nearest_centroid_accuracy(x, labels, scenes)[0] for x in rows]
    assert abs(np.mean(held_out) - 0.25) < 0.06
    present = labels % 2 == 0
    assert abs(np.mean([A.presence_auc(x, present, scenes) for x in rows]) - 0.5) < 0.08
    one_out = [A.presence_auc(x, present) for x in rows]
    assert np.mean(one_out) < 0.3  # the bias the grouping removes
    hot = np.eye(4)[labels] + rng.normal(size=(6, 4))[scenes] * 0.1
    assert A.nearest_centroid_accuracy(hot, labels, scenes)[0] == 1.0


def test_presence_auc_separable_and_unrelated():
    present = np.array([True, False] * 20)
    features = np.stack([present.astype(float), np.zeros(40)], 1)
    assert A.presence_auc(features, present) == 1.0
    rng = np.random.default_rng(2)
    noise = [A.presence_auc(rng.normal(size=(40, 3)), present) for _ in range(20)]
    assert abs(np.mean(noise) - 0.5) < 0.1
    assert A.presence_auc(features[:3], [True, False, False]) is None  # one present image: no LOO centroid


def test_block_mean_and_correlation():
    m = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert np.array_equal(A.block_mean(m, 2, 2, 2), [[2.5, 4.5], [10.5, 12.5]])
    assert A.block_mean(np.ones((5, 7)), 2, 2, 3).shape == (2, 3)  # whole blocks only
    assert A.correlation([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert A.correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert A.correlation([1, 1, 1], [1, 2, 3]) is None


def test_expected_calibration_error_and_accuracy_hand_computed():
    """Bins [0, .1), [.1, .2), ...: |mean(y) - mean(p)| weighted by the bin's share; decided present above 0.5."""
    p = [0.05, 0.15, 0.12, 0.95, 0.65, 0.55]
    y = [False, False, True, True, True, False]
    # bin 0: .05 vs 0; bin 1: mean p .135 vs mean y .5 (two rows); bin 9: .95 vs 1; bin 6: .65 vs 1; bin 5: .55 vs 0
    expected = (0.05 + 2 * 0.365 + 0.05 + 0.35 + 0.55) / 6
    assert A.expected_calibration_error(p, y) == pytest.approx(expected)
    assert A.calibration(p, y) == {'accuracy': pytest.approx(4 / 6), 'ece': pytest.approx(expected), 'images': 6}
    assert A.expected_calibration_error([0.0, 1.0], [False, True]) == 0.0  # the ends fall in the first and last bin
    assert A.expected_calibration_error([0.1, 0.1], [True, False]) == pytest.approx(0.4)  # 0.1 opens bin 1
    assert A.calibration([], []) == {'accuracy': None, 'ece': None, 'images': 0}
    with pytest.raises(ValueError, match='lie in \\[0, 1\\], got 0.0..1.5'):
        A.expected_calibration_error([0.0, 1.5], [True, False])


def _record(probability, harm=False):
    """A per-image record with the recogniser's probabilities; ``harm``: final 2 dB below the input."""
    return {'presence_probability': probability, 'input_psnr': 12.0, 'stage_psnr': [12.0, 10.0 if harm else 13.0]}


def test_calibration_and_harm_per_renderer_hand_computed():
    """Each sample counts for the renderer of every component it carries; a stored pair for its data."""
    def sample(label, renderers=None):
        return A.Sample(label, label, None, None, audit_data.label_degradations(label, None), renderers=renderers,
                        origin='cdd')
    samples = [sample('haze', {'haze': 'fog'}), sample('haze', {'haze': 'fog'}), sample('haze', {'haze': 'scatter'}),
               sample('low_haze', {'low': 'camera', 'haze': 'fog'}), sample('rain')]
    records = [_record([0.1, 0.9, 0.2, 0.2]), _record([0.1, 0.3, 0.2, 0.2], harm=True), _record([0.1, 0.8, 0.2, 0.2]),
               _record([0.7, 0.6, 0.6, 0.1]), _record([0.2, 0.2, 0.9, 0.2])]
    notes = []
    out = summaries.renderer_summary(records, samples, notes)
    assert not notes and list(out['per_renderer']) == ['camera', 'fog', 'scatter', 'cdd']  # component order
    fog = out['per_renderer']['fog']
    assert fog['component'] == 'haze' and fog['images'] == 3 and fog['harm_rate'] == pytest.approx(1 / 3)
    # haze on fog: p .9, .3, .6, all present: right, wrong, right; bins 9, 3, 6: (.1 + .7 + .4) / 3
    assert fog['presence_calibration']['haze'] == {'accuracy': pytest.approx(2 / 3), 'ece': pytest.approx(0.4),
                                                   'images': 3}
    # rain on fog: p .2, .2, .6, none present: (2 * .2 + .6) / 3
    assert fog['presence_calibration']['rain']['ece'] == pytest.approx(1 / 3)
    assert out['per_renderer']['camera']['presence_calibration']['low']['ece'] == pytest.approx(0.3)
    stored = out['per_renderer']['cdd']
    assert stored['component'] is None and stored['presence_calibration']['rain']['accuracy'] == 1.0
    # overall haze: p .9 .3 .8 .6 .2, truth 1 1 1 1 0: decided 4 of 5 right; (.1 + .7 + .2 + .4 + .2) / 5
    assert out['presence_calibration']['haze'] == {'accuracy': pytest.approx(0.8), 'ece': pytest.approx(0.32),
                                                   'images': 5}
    result = {'stage_psnr': [12.0, 12.4], 'stage_psnr_gain': 0.4, 'stage_psnr_rises': 0.8, 'input_psnr': 12.0,
              'harm_rate': 0.2, 'per_image': records, **out}
    text = A.headline(result)
    # low: p .1 .1 .1 .7 .2, truth 0 0 0 1 0: all right; (3 * .1 + .3 + .2) / 5
    assert 'recogniser (p > 0.5) accuracy/ECE low 1.00/0.16, haze 0.80/0.32' in text
    assert 'fog 0.67/0.40' in text and 'camera 1.00/0.30' in text and 'harm rate per renderer: camera 0% of 1' in text
    no_recogniser = summaries.renderer_summary([{k: v for k, v in r.items() if k != 'presence_probability'}
                                                for r in records], samples, notes)
    assert no_recogniser['presence_calibration'] is None and notes
    assert no_recogniser['per_renderer']['fog']['harm_rate'] == pytest.approx(1 / 3)


# ------------------------------------------------------------------------- constructed networks, known answers
class _Oracle(nn.Module):
    """Returns the input as every stage and, as aux, Delta and a rain layer read off a flat grey background.

    On a constant clean image ``c``, a rain-only composite is ``D = c + rain`` (no clipping below 0.6 + c), so
    ``D - c`` is the synthesiser's rain layer; ``Delta = 1 - blockmean(D - c)`` (or its opposite) and
    ``layer = D - c`` are exact.
    """

    size_multiple = 4

    def __init__(self, background, sign):
        super().__init__()
        self.background, self.sign = background, sign

    def forward(self, x, return_aux=False):
        rain = x[:, :1] - self.background
        pooled = F.avg_pool2d(rain, 4)
        delta = 1 - pooled if self.sign == 'clamped' else pooled
        aux = {'delta': [delta, delta], 'residual': [torch.tensor([2.0]), torch.tensor([1.0])],
               'maps': [None, {'layer': rain.repeat(1, 3, 1, 1), 'gain': None}]}
        return ([x, x], aux) if return_aux else [x, x]


def _rain_samples(background=0.2, n=3, size=(48, 40)):
    clean = np.full((*size, 3), background, np.float32)
    samples = []
    for i in range(n):
        lq, _, maps = synthesize(clean, 'rain', 0, i, return_maps=True)
        samples.append(A.Sample(f'{i}/rain', 'rain', lq, clean, ('rain',), maps))
    return samples


def test_delta_equal_to_the_rain_mask_gives_auc_one_and_the_other_sign_zero():
    samples = _rain_samples()
    assert all(s.lq.max() < 0.99 for s in samples)  # no clipping: D - c is the rain layer
    result = A.audit_network(_Oracle(0.2, 'clamped'), samples, 'synthesised', log=lambda *_: None)
    assert result['active_set_auc']['rain'] == pytest.approx(1.0) and result['active_set_images']['rain'] == 3
    assert result['active_set_auc']['snow'] is None and result['active_set_auc_per_stage']['rain'] == [1.0, 1.0]
    assert result['map_error']['layer'] < 1e-6 and set(result['map_error']) == {'layer'}  # absent keys skipped
    assert result['map_error_per_stage']['layer'][0] is None
    assert result['residual'] == [2.0, 1.0] and result['residual_falls'] == 1.0
    assert result['stage_psnr_rises'] == 0.0 and result['stage_psnr'][0] == result['stage_psnr'][-1]
    harm = [r['stage_psnr'][-1] < r['input_psnr'] - 0.5 for r in result['per_image']]
    assert result['harm_rate'] == pytest.approx(np.mean(harm))  # share of images > 0.5 dB below the input
    assert result['routing_accuracy'] is None and result['intervention_psnr_drop'] is None  # no EConv
    assert any('routing' in n for n in result['notes'])
    flipped = A.audit_network(_Oracle(0.2, 'passes'), samples, 'synthesised', log=lambda *_: None)
    assert flipped['active_set_auc']['rain'] == pytest.approx(0.0)  # the sign is fixed, never chosen per run


def _samples(categories=('low', 'rain', 'haze_snow'), n=2, size=(32, 36)):
    samples = []
    for i in range(n):
        clean = photo_crop(('chelsea', 'coffee')[i], size, 30 * i, 40 * i).astype(np.float32) / 255
        for c in categories:
            lq, drawn, maps = synthesize(clean, c, 0, 11 * i + len(c), return_maps=True)
            degradations = audit_data.label_degradations(c, None)
            samples.append(A.Sample(f'{i}/{c}', c, lq, clean, degradations, maps, group=str(i),
                                    renderers=audit_data.drawn_renderers(drawn, degradations)))
    return samples


def _interir_ignoring_routing():
    """A tiny InterIR with every weight drawn at random (no zero-initialised head hides the routing), then every
    EConv's expert kernels and prior coefficients zeroed: alpha and gamma have no effect on any kernel."""
    torch.manual_seed(0)
    net = build_network(dict(TINY_INTERIR)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
        for m in net.modules():
            if isinstance(m, EConv):
                m.experts.zero_()
                m.theta.zero_()
    return net


class _Routed(nn.Module):
    """``[x, x + EConv(x)]`` with a sharp router (its routing differs between dark and bright images) and only the
    expert and prior branches (``W_0 = 0``); ``ignore_routing`` zeroes those branches too."""

    def __init__(self, ignore_routing):
        super().__init__()
        torch.manual_seed(0)
        self.conv = EConv(3, 3, num_experts=2)
        with torch.no_grad():
            for p in self.conv.router.parameters():
                p.normal_(0, 3.0)
            self.conv.weight.zero_()
            if ignore_routing:
                self.conv.experts.zero_()
                self.conv.theta.zero_()

    def forward(self, x):
        return [x, x + self.conv(x)]


def test_presence_accuracy_known_answers():
    """Decisions equal to the true components give accuracy 1 and all four right; every decision flipped gives 0;
    images of unknown degradations are left out; no decisions at all give None with a note."""
    samples = [A.Sample(f'{i}', label, None, None, None) for i, label in enumerate(('low_haze', 'rain', 'snow'))]
    for sample, label in zip(samples, ('low_haze', 'rain', 'snow')):
        sample.degradations = {CATEGORY_PARTS[p] for p in label.split('_')}
    truth = [[c in s.components for c in A.COMPONENTS] for s in samples]
    right = summaries.presence_summary([{'presence': t} for t in truth], samples, [])
    assert right['presence_accuracy'] == {c: 1.0 for c in A.COMPONENTS} and right['presence_exact'] == 1.0
    wrong = summaries.presence_summary([{'presence': [not v for v in t]} for t in truth], samples, [])
    assert wrong['presence_accuracy'] == {c: 0.0 for c in A.COMPONENTS} and wrong['presence_exact'] == 0.0
    unknown = A.Sample('u', 'x', None, None, None)  # degradations unknown: not counted
    assert summaries.presence_summary([{'presence': truth[0]}, {'presence': [False] * 4}], [samples[0], unknown],
                               [])['presence_exact'] == 1.0
    notes = []
    assert summaries.presence_summary([{}], samples[:1], notes)['presence_accuracy'] is None and notes


def test_network_that_ignores_its_routing_has_no_intervention_drop():
    samples = _samples()
    quiet = A.audit_network(_Routed(True), samples, 'synthesised', log=lambda *_: None)
    assert quiet['intervention_psnr_drop'] == 0.0 and quiet['intervention_psnr_change'] == {'own': 0.0, 'other': 0.0}
    live = A.audit_network(_Routed(False), samples, 'synthesised', log=lambda *_: None)
    assert abs(live['intervention_psnr_drop']) > 0.05  # the same net with routed branches: the intervention bites
    assert live['routing_dims'] == 2 + 5 and live['routing_chance'] == pytest.approx(1 / 3)
    assert 0 <= live['routing_accuracy'] <= 1 and set(live['routing_auc']) == set(A.COMPONENTS)
    interir = _interir_ignoring_routing()
    result = A.audit_network(interir, samples, 'synthesised', log=lambda *_: None)
    assert result['intervention_psnr_drop'] == pytest.approx(0.0, abs=1e-5)  # batch-size rounding only
    assert result['routing_dims'] == 7 * sum(isinstance(m, EConv) for m in interir.modules())


def test_routing_probe_records_overrides_and_restores():
    net = _Routed(False)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        before = net(x)[-1]
        with A.RoutingProbe(net) as probe:
            probe.reset()
            recorded = net(x)[-1]
            vectors = probe.vectors()
            probe.set_override(vectors[::-1].copy())  # each image gets the other's routing
            swapped = net(x)[-1]
            probe.set_override(vectors)
            same = net(x)[-1]
            probe.override = None
        after = net(x)[-1]
    econvs = probe.econvs
    assert vectors.shape == (2, 7 * len(econvs)) and np.allclose(vectors[0, :2].sum(), 1)
    assert torch.allclose(before, recorded) and torch.allclose(before, same, atol=1e-5)
    assert not torch.allclose(before, swapped, atol=1e-4) and torch.equal(before, after)
    assert all('route' not in m.__dict__ for m in econvs)


@pytest.mark.parametrize('flags', [{}, {'route_by_presence': True, 'streaks_by_active_set': True}])
def test_routing_per_label_and_calibration_of_interir(flags):
    """Labels x experts (rows sum to 1) and labels x gates, from the audit's own samples, with InterIR's routing by
    presence and streaks by the active set off and on; the recogniser's calibration per renderer comes along."""
    torch.manual_seed(0)
    net = InterIR(**{k: v for k, v in TINY_INTERIR.items() if k != 'type'}, **flags).eval()
    samples = _samples()
    result = A.audit_network(net, samples, 'synthesised', log=lambda *_: None)
    table = result['routing_per_label']
    assert table['labels'] == ['low', 'rain', 'haze_snow'] and table['images'] == [2, 2, 2]
    experts = np.array(table['experts'])
    assert experts.shape == (3, TINY_INTERIR['num_experts']) and np.allclose(experts.sum(1), 1)
    gates = np.array(table['gates'])
    assert gates.shape == (3, 5) and ((gates > 0) & (gates < 1)).all() and table['gate_names'][0] == 'identity'
    assert table['expert_spread'] == pytest.approx(np.ptp(experts, 0).max())
    assert set(result['presence_calibration']) == set(A.COMPONENTS)
    assert list(result['per_renderer']) == ['retinex', 'scatter', 'streaks', 'flakes']  # the original renderers
    assert result['per_renderer']['flakes']['images'] == 2
    assert all(0 <= r['presence_probability'][0] <= 1 for r in result['per_image'])


def test_routing_per_label_of_a_constructed_econv_net():
    result = A.audit_network(_Routed(False), _samples(), 'synthesised', log=lambda *_: None)
    experts = np.array(result['routing_per_label']['experts'])
    assert experts.shape == (3, 2) and np.allclose(experts.sum(1), 1)
    assert result['presence_calibration'] is None and any('presence_calibration' in n for n in result['notes'])


def test_audit_package_public_api_and_modules():
    """What the CLI, the demo and users import, and each part findable by name."""
    from interir_plugin.tools.audit import figure, measurements, probes, report, statistics

    for name in ('audit', 'audit_network', 'load_samples', 'Sample', 'RoutingProbe', 'headline', 'target_table',
                 'auc', 'nearest_centroid_accuracy', 'chance_rate', 'presence_auc', 'block_mean', 'correlation',
                 'held_out_centroids', 'calibration', 'expected_calibration_error', 'COMPONENTS', 'TARGETS',
                 'ACTIVE_SET_THRESHOLD', 'MAP_KEYS', 'DEFAULT_MAX_SIDE', 'write_markdown', 'draw_audit_figure'):
        assert hasattr(A, name) and name in A.__all__, name
    assert A.RoutingProbe is probes.RoutingProbe and A.measure is measurements.measure
    assert A.auc is statistics.auc and A.headline is report.headline
    assert A.draw_audit_figure is figure.draw_audit_figure and A.load_samples is audit_data.load_samples


# ------------------------------------------------------------------------------------------------- end to end
def _write(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))
    return str(path)


def _option(tmp_path, network_g, name, weights=False):
    """Option file of ``network_g``; ``weights``: with a checkpoint of a seeded random initialisation."""
    path = None
    if weights:
        torch.manual_seed(0)
        path = str(tmp_path / f'{name}.pth')
        torch.save({'params': build_network(dict(network_g)).state_dict()}, path)
    return write_yaml(tmp_path / f'{name}.yml', {'name': name, 'model_type': 'UnfoldingRestorationModel',
                                                 'num_gpu': 0, 'network_g': network_g,
                                                 'path': {'pretrain_network_g': path, 'param_key_g': 'params'}})


def test_audit_command_on_a_tiny_interir(tmp_path, capsys):
    for i, name in enumerate(('chelsea', 'coffee')):
        _write(tmp_path / 'clean' / f'{name}.png', photo_crop(name, (34, 40), 20 * i, 30))  # 34: padded
    opt = _option(tmp_path, TINY_INTERIR, 'tiny', weights=True)
    out = tmp_path / 'audit'
    assert main(['audit', '-opt', opt, '--data', str(tmp_path / 'clean'), '--out', str(out), '--categories',
                 'low_haze', 'rain', 'snow', '--seed', '3', '--device', 'cpu']) == 0
    printed = capsys.readouterr().out
    assert 'stage PSNR' in printed and 'routing accuracy' in printed and 'audit.json' in printed
    assert result_keys_present(json.load(open(out / 'audit.json')))
    result = json.load(open(out / 'audit.json'))
    assert result['data_kind'] == 'synthesised' and result['labels'] == ['low_haze', 'rain', 'snow']
    assert len(result['per_image']) == 6 and result['seed'] == 3
    stages = TINY_INTERIR['num_stages'] + 1
    assert len(result['stage_psnr']) == len(result['residual']) == stages
    assert 0 <= result['stage_psnr_rises'] <= 1 and 0 <= result['residual_falls'] <= 1
    assert 0 <= result['routing_accuracy'] <= 1 and result['routing_chance'] == pytest.approx(1 / 3, abs=1e-4)
    assert all(0 <= result['active_set_auc'][k] <= 1 for k in ('rain', 'snow'))
    assert -1 <= result['active_set_correlation']['transmission'] <= 1
    assert -1 <= result['active_set_correlation']['illumination'] <= 1
    assert isinstance(result['intervention_psnr_drop'], float) and result['intervention_images'] == 6
    assert 0 <= result['routing_accuracy_input'] <= 1 and 0 <= result['active_set_auc_input']['rain'] <= 1
    assert result['weights'].endswith('tiny.pth') and result['routing_groups'] == 2
    assert set(result['presence_accuracy']) == set(A.COMPONENTS)  # the tiny InterIR recognises (untrained)
    assert all(0 <= v <= 1 for v in result['presence_accuracy'].values()) and 0 <= result['presence_exact'] <= 1
    markdown = (out / 'audit.md').read_text()
    assert '| routing accuracy / chance |' in markdown and '## Active set' in markdown
    figure = cv2.imread(str(out / 'audit.png'))
    assert figure is not None and figure.shape[0] > 500
    # the same seed gives the same images, hence the same numbers
    again = A.audit(opt, str(tmp_path / 'clean'), str(tmp_path / 'again'), ['low_haze', 'rain', 'snow'], seed=3,
                    device='cpu', log=lambda *_: None)
    for key in ('stage_psnr', 'residual', 'routing_accuracy', 'intervention_psnr_drop'):
        assert again[key] == pytest.approx(result[key], abs=1e-3), key
    assert again['active_set_auc'] == pytest.approx(result['active_set_auc'], abs=1e-3)


def result_keys_present(result):
    """Every key issue 14 asks of audit.json."""
    keys = ('stage_psnr', 'stage_psnr_rises', 'residual', 'residual_falls', 'routing_accuracy', 'routing_chance',
            'routing_auc', 'active_set_auc', 'active_set_correlation', 'intervention_psnr_drop', 'map_error')
    return all(k in result for k in keys) and set(result['routing_auc']) == set(A.COMPONENTS)


def _cdd_layout(root, labels=('low', 'rain'), n=2):
    for i in range(n):
        gt = photo_crop(('astronaut', 'coffee')[i], (32, 32), 40 * i, 30 * i).astype(np.float32) / 255
        _write(os.path.join(root, 'clear', f'{i}.png'), (gt * 255).round().astype(np.uint8))
        for label in labels:
            lq = synthesize(gt, label, 1, i)[0]
            _write(os.path.join(root, label, f'{i}.png'), (lq * 255).round().astype(np.uint8))


def test_audit_of_a_labelled_set_and_of_dgunet(tmp_path):
    _cdd_layout(str(tmp_path / 'cdd'))
    opt = _option(tmp_path, TINY_INTERIR, 'tiny')
    with pytest.warns(UserWarning):
        labelled = A.audit(opt, str(tmp_path / 'cdd'), str(tmp_path / 'a'), device='cpu', log=lambda *_: None)
    assert labelled['data_kind'] == 'labelled' and labelled['labels'] == ['low', 'rain']
    assert labelled['active_set_auc'] is None and labelled['map_error'] is None
    assert any('labelled set has no synthesiser maps' in n for n in labelled['notes'])
    assert labelled['routing_accuracy'] is not None and labelled['routing_auc']['low'] is not None
    assert list(labelled['per_renderer']) == [str(tmp_path / 'cdd')]  # stored pairs: one group, named after the data
    dg = _option(tmp_path, TINY_DGUNET, 'dg')
    with pytest.warns(UserWarning):
        result = A.audit(dg, str(tmp_path / 'cdd'), str(tmp_path / 'b'), categories=['rain'], device='cpu',
                         log=lambda *_: None)
    assert len(result['stage_psnr']) == TINY_DGUNET['depth'] + 2 and result['labels'] == ['rain']
    assert result['residual'] is None and result['routing_accuracy'] is None
    assert result['intervention_psnr_drop'] is None and 'stage PSNR' in result['headline']
    assert (tmp_path / 'b' / 'audit.md').read_text().count('| n/a |') >= 3  # the rows that do not apply


def test_audit_bad_inputs_name_what_is_wrong(tmp_path):
    opt = _option(tmp_path, TINY_INTERIR, 'tiny')
    _write(tmp_path / 'clean' / 'a.png', photo_crop('coffee', (16, 16)))
    with pytest.warns(UserWarning), pytest.raises(SystemExit, match="unknown CDD-11 category 'fog'"):
        main(['audit', '-opt', opt, '--data', str(tmp_path / 'clean'), '--out', str(tmp_path / 'o'),
              '--categories', 'fog', '--device', 'cpu'])
    with pytest.warns(UserWarning), pytest.raises(SystemExit, match='nowhere.*is not a folder'):
        main(['audit', '-opt', opt, '--data', str(tmp_path / 'nowhere'), '--out', str(tmp_path / 'o'),
              '--device', 'cpu'])
    os.makedirs(tmp_path / 'empty' / 'clear')
    with pytest.warns(UserWarning), pytest.raises(SystemExit, match='has clear/ but no CDD-11 category folder'):
        main(['audit', '-opt', opt, '--data', str(tmp_path / 'empty'), '--out', str(tmp_path / 'o'),
              '--device', 'cpu'])
    with pytest.raises(ValueError, match='max_images must be a positive int'):
        A.load_samples(str(tmp_path / 'clean'), max_images=0)


# ---------------------------------------------------------------------------------------------------- explain
def test_explain_shows_the_synthesisers_maps(tmp_path):
    clean = _write(tmp_path / 'clean.png', photo_crop('chelsea', (40, 44)))
    opt = _option(tmp_path, TINY_INTERIR, 'tiny')
    with pytest.warns(UserWarning):
        assert main(['explain', '-opt', opt, '--input', clean, '--category', 'low_haze_rain', '--seed', '2',
                     '--out', str(tmp_path / 'ex'), '--device', 'cpu']) == 0
    numbers = json.load(open(tmp_path / 'ex' / 'explain.json'))
    assert numbers['category'] == 'low_haze_rain' and numbers['seed'] == 2
    assert {'gain', 'illumination', 'rain', 'transmission', 'airlight', 'layer'} <= set(numbers['true_maps'])
    assert 0 < numbers['true_maps']['gain']['mean'] < 1 and 0.6 <= numbers['true_maps']['airlight'] <= 1
    assert len(numbers['stage_psnr']) == TINY_INTERIR['num_stages'] + 1  # the clean input is the target
    assert 'active_set_map' in numbers and cv2.imread(str(tmp_path / 'ex' / 'explain.png')) is not None
    with pytest.warns(UserWarning), pytest.raises(SystemExit, match='cannot be combined with --category'):
        main(['explain', '-opt', opt, '--input', clean, '--gt', clean, '--category', 'rain', '--out',
              str(tmp_path / 'ex2')])
    from interir_plugin.tools.explain import explain

    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"maps\['rain'\] is 3x3 but the input is 40x44"):
        explain(opt, clean, str(tmp_path / 'ex3'), maps={'rain': np.zeros((3, 3))}, device='cpu')
    with pytest.warns(UserWarning):
        given = explain(opt, clean, str(tmp_path / 'ex4'), maps={'snow': np.full((40, 44), 0.5), 'airlight': 0.7},
                        device='cpu')
    assert given['numbers']['true_maps'] == {'snow': {'mean': 0.5, 'min': 0.5, 'max': 0.5}, 'airlight': 0.7}


def test_target_table_and_headline():
    result = {'stage_psnr': [20.0, 20.7], 'stage_psnr_gain': 0.7, 'stage_psnr_rises': 0.9, 'residual_falls': None,
              'input_psnr': 19.0, 'harm_rate': 0.25,
              'routing_accuracy': None, 'active_set_auc': {'rain': 0.8, 'snow': None},
              'intervention_psnr_drop': 1e-15, 'per_image': [{}] * 4}
    met = {text: m for text, _, _, _, m in A.target_table(result)}
    assert met['final - first stage PSNR (dB)'] is True and met['share of images whose residual falls'] is None
    assert met['active-set AUC, rain'] is True and met['active-set AUC, snow'] is None
    assert met['intervention PSNR drop (dB)'] is False  # rounding noise is no drop
    result['intervention_psnr_drop'] = 0.2
    assert {t: m for t, _, _, _, m in A.target_table(result)}['intervention PSNR drop (dB)'] is True
    result['active_set_auc_input'] = {'rain': 0.9, 'snow': None}
    text = A.headline(result)
    assert '20.00 -> 20.70 dB (+0.70 dB; rises in 90% of 4 images; input 19.00 dB, harm rate 25.0%' in text
    assert 'rain 0.80' in text
    assert 'intervention PSNR drop +0.200 dB' in text and 'routing' not in text


def test_protocol_with_a_synthesis_source_and_a_paired_source(tmp_path):
    _cdd_layout(str(tmp_path / 'cdd'), labels=('low',))
    protocol = write_yaml(tmp_path / 'proto.yml', {
        'name': 'proto', 'labels': ['rainy', 'low'], 'default_root': str(tmp_path / 'cdd'),
        'splits': {'test': {'sources': [
            {'label': 'rainy', 'dataroot_gt': '{root}/clear', 'synthesis': {'rain': {}}},
            {'label': 'low', 'dataroot_gt': '{root}/clear', 'dataroot_lq': '{root}/low'}]}}})
    samples, kind = A.load_samples(protocol, seed=5)
    assert kind == 'labelled' and [s.label for s in samples] == ['rainy', 'rainy', 'low', 'low']
    assert 'rain' in samples[0].maps and samples[2].maps is None
    assert samples[0].components == frozenset({'rain'}) and samples[2].components == frozenset({'low'})
    assert samples[0].group == samples[2].group  # the same clean file: held out together
    again, _ = A.load_samples(protocol, seed=5)
    assert np.array_equal(again[1].lq, samples[1].lq)
    with pytest.raises(KeyError, match="no split 'test'"):
        A.load_samples(write_yaml(tmp_path / 'p2.yml', {'name': 'p2', 'labels': ['a'], 'default_root': '.',
                                                         'splits': {'train': {'sources': []}}}))


@pytest.mark.parametrize('renderer', ['fog', 'glare'])
def test_airlight_error_against_a_renderer_whose_airlight_is_a_map(tmp_path, renderer):
    """fog and glare give the airlight as a map: the audit compares the network's per-channel value with its mean."""
    _cdd_layout(str(tmp_path / 'cdd'), labels=('low',))
    protocol = write_yaml(tmp_path / 'proto.yml', {
        'name': 'proto', 'labels': ['haze'], 'default_root': str(tmp_path / 'cdd'),
        'splits': {'test': {'sources': [
            {'label': 'haze', 'dataroot_gt': '{root}/clear', 'synthesis': {'haze': {'renderer': renderer}}}]}}})
    samples, _ = A.load_samples(protocol, seed=1)
    assert np.ndim(samples[0].maps['airlight']) >= 2  # a map, not a number
    net = InterIR(num_feat=8, num_stages=1, num_experts=2, expand=1).eval()
    result = A.audit_network(net, samples, 'labelled', log=lambda *_: None)
    truth = np.mean([np.mean(s.maps['airlight']) for s in samples])
    assert 0 <= result['map_error']['airlight'] <= abs(0.8 - truth) + 0.01  # A starts at sigmoid(1.4) = 0.8


def _renderer_protocol(tmp_path):
    """A protocol like minicdd_renderers (a split per haze renderer, synthesised) plus a stored split like
    minicdd_loro's heldout (a CDD-11 layout)."""
    _cdd_layout(str(tmp_path / 'cdd'), labels=('haze',))

    def split(renderer):
        return {'sources': [{'label': label, 'dataroot_gt': '{root}/clear',
                             'synthesis': {'category': label, 'renderers': {'haze': renderer}}}
                            for label in ('haze', 'low_haze')]}
    return write_yaml(tmp_path / 'renderers.yml', {
        'name': 'renderers', 'labels': ['haze', 'low_haze'], 'default_root': str(tmp_path / 'cdd'),
        'splits': {'heldout_fog': split('fog'), 'heldout_glare': split('glare'), 'train': split('scatter'),
                   'heldout': {'cdd11': {'root': '{root}', 'categories': ['haze']}}}})


def test_protocol_splits_by_pattern_carry_their_renderers(tmp_path):
    protocol = _renderer_protocol(tmp_path)
    assert A.protocol_splits(protocol, 'heldout_*') == ['heldout_fog', 'heldout_glare']
    assert A.protocol_splits(protocol, ['heldout', 'heldout_*', 'heldout_fog']) == ['heldout', 'heldout_fog',
                                                                                     'heldout_glare']
    samples, kind = A.load_samples(protocol, split='heldout_*', seed=1)
    assert kind == 'synthesised' and len(samples) == 2 * 2 * 2  # splits x labels x photos
    assert [s.renderers for s in samples[:2]] == [{'haze': 'fog'}, {'haze': 'fog'}]
    assert samples[4].renderers == {'haze': 'glare'} and samples[6].renderers == {'low': 'retinex', 'haze': 'glare'}
    assert samples[0].name == 'heldout_fog:0/haze' and samples[0].origin.endswith(':heldout_fog')
    stored, kind = A.load_samples(protocol, split='heldout')  # stored pairs: one group named after the data
    assert kind == 'labelled' and stored[0].renderers is None and stored[0].renderer_groups == [('renderers:heldout',
                                                                                                 None)]
    with pytest.raises(KeyError, match="no split 'test_.*'; it has \\['heldout_fog'"):
        A.load_samples(protocol, split='test_*')
    with pytest.raises(ValueError, match='is for a protocol'):
        A.load_samples(str(tmp_path / 'cdd'), split='heldout')


def test_audit_command_per_renderer_in_one_run(tmp_path, capsys):
    protocol = _renderer_protocol(tmp_path)
    opt = _option(tmp_path, TINY_INTERIR, 'tiny', weights=True)
    out = tmp_path / 'audit'
    assert main(['audit', '-opt', opt, '--data', protocol, '--split', 'heldout_*', 'heldout', '--out', str(out),
                 '--device', 'cpu']) == 0
    printed = capsys.readouterr().out
    assert 'recogniser (p > 0.5) accuracy/ECE' in printed and 'harm rate per renderer: retinex' in printed
    result = json.load(open(out / 'audit.json'))
    assert result['splits'] == ['heldout_fog', 'heldout_glare', 'heldout']
    groups = result['per_renderer']
    assert list(groups) == ['retinex', 'fog', 'glare', 'renderers:heldout']
    assert [g['images'] for g in groups.values()] == [4, 4, 4, 2]  # low_haze counts for retinex and its haze's
    assert all(0 <= g['harm_rate'] <= 1 and set(g['presence_calibration']) == set(A.COMPONENTS)
               for g in groups.values())
    markdown = (out / 'audit.md').read_text()
    assert '## Per renderer' in markdown and '| fog | haze | 4 |' in markdown and '## Routing per label' in markdown
