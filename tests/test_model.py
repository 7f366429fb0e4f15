"""UnfoldingRestorationModel: multi-stage losses, padding, tiling, self-ensemble, per-label validation, checkpoints,
non-finite handling and option checking, on a tiny two-stage test network and real photo crops."""
import copy
import csv
import os
import random
import signal
import time

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import interir_plugin  # noqa: F401  (shims first: basicsr is imported lazily below, after them)
from conftest import PHOTO_NAMES, photo_crop
from interir_plugin.models.unfolding_model import TRAIN_KEYS, UnfoldingRestorationModel, check_options
from interir_plugin.utils.checkpoint import atomic_torch_save, load_checkpoint
from interir_plugin.utils.padding import crop_to, pad_to_multiple
from interir_plugin.utils.tiling import blend_window, self_ensemble_x8, tile_starts, tiled_apply

TINY = '_TinyTwoStageNetForTests'


def build_model(opt):
    """BasicSR's ``build_model`` (registry lookup of ``model_type``), imported after the plugin's shims."""
    from basicsr.models import build_model as basicsr_build_model

    return basicsr_build_model(opt)


class TinyTwoStageNet(nn.Module):
    """Two residual conv stages (receptive-field radius 2 each, 4 in all); input sides must be multiples of 4."""

    size_multiple = 4

    def __init__(self, num_feat=8):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(3, num_feat, 3, padding=1), nn.ReLU(), nn.Conv2d(num_feat, 3, 3, padding=1))
            for _ in range(2))

    def forward(self, x):
        if x.shape[-2] % 4 or x.shape[-1] % 4:
            raise ValueError(f'input size {tuple(x.shape[-2:])} is not a multiple of 4')
        outs = []
        for stage in self.stages:
            x = x + stage(x)
            outs.append(x)
        return outs


@pytest.fixture
def tiny_net(monkeypatch):
    """Let ``network_g: {type: _TinyTwoStageNetForTests}`` build the test net without touching the registry."""
    from basicsr.models import sr_model as basicsr_sr_model

    original = basicsr_sr_model.build_network

    def build(opt):
        if opt['type'] == TINY:
            return TinyTwoStageNet(**{k: v for k, v in opt.items() if k != 'type'})
        return original(opt)

    monkeypatch.setattr(basicsr_sr_model, 'build_network', build)


def _write_pairs(root, labels=('noise', 'dark'), n=2, size=(36, 44)):
    """PNG pairs from real photos: ``root/<label>/{gt,lq}/<i>.png``; LQ = noisy or darkened GT."""
    rng = np.random.default_rng(0)
    for j, label in enumerate(labels):
        for sub in ('gt', 'lq'):
            os.makedirs(os.path.join(root, label, sub), exist_ok=True)
        for i in range(n):
            gt = photo_crop(PHOTO_NAMES[(i + j) % len(PHOTO_NAMES)], size, top=20 * i, left=30 * j)
            lq = gt / 255.0 + rng.normal(0, 0.05, gt.shape) if j % 2 == 0 else gt / 255.0 * 0.5
            lq = (np.clip(lq, 0, 1) * 255).round().astype(np.uint8)
            for sub, img in (('gt', gt), ('lq', lq)):
                cv2.imwrite(os.path.join(root, label, sub, f'{i:03d}.png'), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return root


def _paired_dataset(opt):
    from basicsr.data.paired_image_dataset import PairedImageDataset

    return PairedImageDataset(opt)


class LabelledPairs(torch.utils.data.Dataset):
    """BasicSR PairedImageDatasets, one per label folder, with ``label``/``label_name`` added to each sample."""

    def __init__(self, root, labels, name='pairs'):
        self.opt = {'name': name}
        self.labels = list(labels)
        self.parts = [_paired_dataset({
            'name': label, 'phase': 'val', 'scale': 1, 'io_backend': {'type': 'disk'}, 'filename_tmpl': '{}',
            'dataroot_gt': os.path.join(root, label, 'gt'), 'dataroot_lq': os.path.join(root, label, 'lq')})
            for label in self.labels]
        self.index = [(j, i) for j, part in enumerate(self.parts) for i in range(len(part))]

    def __len__(self):
        return len(self.index)

    def __getitem__(self, k):
        j, i = self.index[k]
        return {**self.parts[j][i], 'label': j, 'label_name': self.labels[j]}


def _opt(tmp_path, train=None, val=None, is_train=True):
    exp = str(tmp_path / 'exp')
    opt = {
        'name': 'tiny', 'model_type': 'UnfoldingRestorationModel', 'num_gpu': 0, 'dist': False, 'rank': 0,
        'world_size': 1, 'is_train': is_train, 'network_g': {'type': TINY, 'num_feat': 8},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None, 'log': exp,
                 'models': os.path.join(exp, 'models'), 'training_states': os.path.join(exp, 'training_states'),
                 'visualization': os.path.join(exp, 'visualization')},
        'val': {'val_freq': 1, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False},
                            'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': False}},
                **(val or {})},
    }
    if is_train:
        opt['train'] = {'ema_decay': 0.9, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                        'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
                        'total_iter': 10, 'warmup_iter': -1,
                        'pixel_opt': {'type': 'CharbonnierLoss', 'loss_weight': 1.0, 'eps': 1e-6},
                        'edge_opt': {'type': 'EdgeLoss', 'loss_weight': 0.05},
                        'frequency_opt': {'type': 'FrequencyLoss', 'loss_weight': 0.01},
                        **(train or {})}
    return opt


def _batch(size=(32, 40), b=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    gt = torch.stack([torch.from_numpy(photo_crop(PHOTO_NAMES[i], size, 10 * i, 10 * i)).permute(2, 0, 1).float()
                      / 255 for i in range(b)])
    lq = (gt + 0.1 * torch.randn(gt.shape, generator=gen)).clamp(0, 1)
    return {'lq': lq, 'gt': gt}


def _params(net):
    return [p.detach().clone() for p in net.parameters()]


# ------------------------------------------------------------------------------------------------- padding
@pytest.mark.parametrize('size,multiple', [((32, 40), 8), ((33, 45), 8), ((3, 5), 8), ((1, 7), 4), ((17, 17), 1)])
def test_padding_round_trips_and_matches_reflect(size, multiple):
    x = torch.rand(2, 3, *size)
    padded, orig = pad_to_multiple(x, multiple)
    assert orig == size
    assert padded.shape[-2] % multiple == 0 and padded.shape[-1] % multiple == 0
    assert padded.shape[-2] - size[0] < multiple and padded.shape[-1] - size[1] < multiple
    assert torch.equal(crop_to(padded, orig), x)
    assert all(torch.equal(t, x) for t in crop_to([padded, padded], orig))
    ph, pw = padded.shape[-2] - size[0], padded.shape[-1] - size[1]
    if ph < size[0] and pw < size[1]:  # where torch's reflect padding is defined, ours is identical
        assert torch.equal(padded, F.pad(x, (0, pw, 0, ph), mode='reflect'))


def test_padding_honours_a_minimum_size():
    x = torch.rand(1, 3, 3, 21)
    padded, size = pad_to_multiple(x, 8, min_size=16)
    assert padded.shape[-2:] == (16, 24) and torch.equal(crop_to(padded, size), x)


def test_padding_rejects_bad_input():
    with pytest.raises(ValueError, match='multiple'):
        pad_to_multiple(torch.rand(1, 3, 8, 8), 0)
    with pytest.raises(ValueError, match='smaller'):
        crop_to(torch.rand(1, 3, 8, 8), (9, 8))


# -------------------------------------------------------------------------------------------------- tiling
def test_tile_grid_covers_image_and_windows_blend_to_one():
    for size, tile, overlap in ((100, 32, 16), (64, 64, 16), (65, 32, 8), (37, 48, 16)):
        starts = tile_starts(size, tile, overlap)
        t = min(tile, size)
        assert starts[0] == 0 and starts[-1] + t == size
        assert all(b - a <= t - overlap for a, b in zip(starts, starts[1:]))
        total = torch.zeros(size)
        for s in starts:
            total[s:s + t] += blend_window(t, overlap, s > 0, s + t < size)
        assert (total > 0.49).all()  # every pixel gets weight
    w = blend_window(32, 16, True, True)
    assert (w[:4] == 0).all() and (w[-4:] == 0).all() and (w[12:20] == 1).all()
    assert torch.allclose(w[4:12] + w[4:12].flip(0), torch.ones(8))  # opposite ramps sum to 1


@pytest.mark.parametrize('size,tile,overlap', [((100, 76), 32, 16), ((64, 96), 48, 24), ((40, 40), 64, 16)])
def test_tiled_equals_whole_image_when_overlap_covers_receptive_field(size, tile, overlap):
    net = TinyTwoStageNet().eval()
    x = torch.from_numpy(photo_crop('coffee', size)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        whole = net(x)[-1]
        calls = []

        def fn(t):
            calls.append(tuple(t.shape[-2:]))
            return net(t)[-1]

        tiled = tiled_apply(fn, x, tile, overlap)
    assert len(calls) == len(tile_starts(size[0], tile, overlap)) * len(tile_starts(size[1], tile, overlap))
    assert all(c[0] <= tile and c[1] <= tile for c in calls)
    assert (tiled - whole).abs().max() < 1e-5  # receptive-field radius 4 <= overlap // 4


def test_tiled_differs_when_overlap_is_too_small():
    """The equality above is not automatic: with no overlap, tile seams differ from whole-image inference."""
    net = TinyTwoStageNet().eval()
    x = torch.from_numpy(photo_crop('coffee', (64, 64))).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        assert (tiled_apply(lambda t: net(t)[-1], x, 32, 0) - net(x)[-1]).abs().max() > 1e-3


def test_self_ensemble_inverts_every_transform():
    x = torch.rand(2, 3, 12, 20)
    seen = []

    def fn(t):
        seen.append(tuple(t.shape[-2:]))
        return t * 2

    assert torch.allclose(self_ensemble_x8(fn, x), 2 * x)
    assert sorted(set(seen)) == [(12, 20), (20, 12)] and len(seen) == 8
    # a position-dependent function: the result is the mean of the 8 back-transformed ramps
    ramp = torch.arange(20.0).expand(12, 20)
    out = self_ensemble_x8(lambda t: t + torch.arange(float(t.shape[-1])).expand(t.shape), x)
    assert torch.allclose(out - x, out[0, 0] - x[0, 0]) and not torch.allclose(out - x, ramp)


def test_model_test_with_tiles_and_ensemble_matches_whole(tiny_net, tmp_path):
    model = build_model(_opt(tmp_path, is_train=False))
    data = _batch((48, 64), b=1)
    model.feed_data(data)
    model.test()
    whole = model.output.clone()
    assert whole.shape == data['lq'].shape
    model.tile, model.tile_overlap = 32, 16
    model.feed_data(data)
    model.test()
    assert (model.output - whole).abs().max() < 1e-5
    model.self_ensemble = True
    model.feed_data(data)
    model.test()
    assert model.output.shape == whole.shape and (model.output - whole).abs().mean() > 1e-6  # a random net is not
    # equivariant, so the ensemble differs, yet it stays an average of restorations of the same picture
    assert (model.output - whole).abs().mean() < (data['lq'] - whole).abs().mean() + 0.1


def test_tile_options_are_checked(tiny_net, tmp_path):
    with pytest.raises(ValueError, match='twice'):
        build_model(_opt(tmp_path, is_train=False, val={'tile': 32, 'tile_overlap': 20}))
    with pytest.raises(ValueError, match='size_multiple'):
        build_model(_opt(tmp_path, is_train=False, val={'tile': 30, 'tile_overlap': 8}))


# ------------------------------------------------------------------------------------------------ training
def test_padding_inside_the_model_for_any_input_size(tiny_net, tmp_path):
    model = build_model(_opt(tmp_path))
    data = _batch((30, 42))  # not multiples of 4: the net alone refuses it
    with pytest.raises(ValueError, match='multiple of 4'):
        model.net_g(data['lq'])
    model.feed_data(data)
    model.optimize_parameters(1)
    assert model.output.shape == data['gt'].shape
    assert set(model.get_current_log()) == {'l_pix', 'l_edge', 'l_freq', 'l_total', 'nonfinite_steps'}


def test_loss_is_weighted_sum_over_stages(tiny_net, tmp_path):
    model = build_model(_opt(tmp_path, train={'stage_weights': [0.25, 1.0]}))
    data = _batch()
    outputs = model.run_network(model.net_g, data['lq'])
    total, parts = model.compute_losses(outputs, data['gt'])
    expect = 0
    for w, out in zip([0.25, 1.0], outputs):
        expect = expect + w * (model.cri_pix(out, data['gt']) + model.cri_edge(out, data['gt'])
                               + model.cri_freq(out, data['gt']))
    assert torch.allclose(total, expect)
    assert torch.allclose(parts['l_pix'], 0.25 * model.cri_pix(outputs[0], data['gt'])
                          + model.cri_pix(outputs[1], data['gt']))
    model.stage_weights = None  # default: every stage weighs 1 (DGUNet)
    assert torch.allclose(model.compute_losses(outputs, data['gt'])[0],
                          sum(model.compute_losses([o], data['gt'])[0] for o in outputs))


def test_training_lowers_the_loss_and_updates_ema(tiny_net, tmp_path):
    model = build_model(_opt(tmp_path, train={'optim_g': {'type': 'AdamW', 'lr': 2e-3, 'weight_decay': 0.0}}))
    assert isinstance(model.optimizer_g, torch.optim.AdamW)
    data = _batch()
    ema_before = _params(model.net_g_ema)
    losses = []
    for it in range(1, 21):
        model.feed_data(data)
        model.optimize_parameters(it)
        losses.append(model.get_current_log()['l_total'])
    assert losses[-1] < 0.8 * losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(ema_before, _params(model.net_g_ema)))


def test_presence_gates_are_teacher_forced_and_the_recogniser_learns_in_its_own_group(tmp_path):
    """A tiny InterIR with presence gates: training steps take the gates from the labels (l_presence in the log),
    the recogniser's parameters form a second optimizer group at presence_lr_scale x the rate and change; a batch
    without labels is refused with a message naming the fix."""
    opt = _opt(tmp_path, train={'presence_weight': 0.5, 'presence_lr_scale': 10, 'edge_opt': None,
                                'frequency_opt': None})
    opt['network_g'] = {'type': 'InterIR', 'num_feat': 8, 'unshuffle': 4, 'num_stages': 1, 'num_experts': 1,
                        'expand': 1}
    model = build_model(opt)
    groups = model.optimizer_g.param_groups
    own = {id(p) for p in model.net_g.head.recogniser.parameters()}
    assert len(groups) == 2 and groups[1]['lr'] == pytest.approx(10 * groups[0]['lr'])
    assert {id(p) for p in groups[1]['params']} == own and not own & {id(p) for p in groups[0]['params']}
    before = _params(model.net_g.head.recogniser)
    data = {**_batch(), 'label_name': ['low_haze', 'rain']}
    for it in (1, 2):
        model.feed_data(data)
        model.optimize_parameters(it)
    log = model.get_current_log()
    assert log['l_presence'] > 0 and log['l_total'] == pytest.approx(log['l_pix'] + log['l_presence'], rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(model.net_g.head.recogniser)))
    model.feed_data(_batch())  # no label_name
    with pytest.raises(ValueError, match='recognise: false'):
        model.optimize_parameters(3)


def test_stage_weights_length_must_match_outputs(tiny_net, tmp_path):
    model = build_model(_opt(tmp_path, train={'stage_weights': [1.0, 1.0, 1.0]}))
    model.feed_data(_batch())
    with pytest.raises(ValueError, match=r'stage_weights has 3 entries .* returns 2 stage outputs'):
        model.optimize_parameters(1)


def test_nonfinite_loss_skips_step_and_stops_after_limit(tiny_net, tmp_path):
    model = build_model(_opt(tmp_path, train={'max_nonfinite_steps': 3}))
    good, bad = _batch(), _batch()
    bad['gt'][0, 0, 0, 0] = float('nan')
    for it in (1, 2):  # two bad steps: nothing moves
        before, ema = _params(model.net_g), _params(model.net_g_ema)
        model.feed_data(bad)
        model.optimize_parameters(it)
        assert all(torch.equal(a, b) for a, b in zip(before, _params(model.net_g)))
        assert all(torch.equal(a, b) for a, b in zip(ema, _params(model.net_g_ema)))
        assert model.get_current_log()['nonfinite_steps'] == it
    model.feed_data(good)  # a finite step resets the count in a row
    before = _params(model.net_g)
    model.optimize_parameters(3)
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(model.net_g)))
    assert model.nonfinite_in_a_row == 0 and model.nonfinite_steps == 2
    model.feed_data(bad)
    model.optimize_parameters(4)
    model.optimize_parameters(5)
    with pytest.raises(RuntimeError, match=r'3 non-finite steps in a row \(train.max_nonfinite_steps = 3\)'):
        model.optimize_parameters(6)
    assert model.nonfinite_steps == 5


def test_grad_clip_bounds_the_update(tiny_net, tmp_path):
    model = build_model(_opt(tmp_path, train={'grad_clip': 1e-3, 'ema_decay': 0,
                                              'optim_g': {'type': 'SGD', 'lr': 1.0}}))
    before = _params(model.net_g)
    model.feed_data(_batch())
    model.optimize_parameters(1)
    step = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(before, _params(model.net_g))))
    assert model.get_current_log()['grad_norm'] > 1e-2  # the raw gradient was much larger than the clip
    assert 0 < step <= 1e-3 * 1.0001


def test_bf16_autocast_runs_the_forward_in_bfloat16_on_cpu(tiny_net, tmp_path):
    model = build_model(_opt(tmp_path, train={'bf16': True}))
    dtypes = []
    model.net_g.stages[0][0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    model.feed_data(_batch())
    model.optimize_parameters(1)
    assert dtypes == [torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in model.net_g.parameters())
    assert np.isfinite(model.get_current_log()['l_total'])


@pytest.mark.parametrize('section,key,match', [
    ('train', 'pixel_optt', r"train.pixel_optt \(did you mean 'pixel_opt'\?\)"),
    ('train', 'use_grad_clip', 'unknown option train.use_grad_clip'),
    ('train', 'perceptual_opt', 'perceptual losses are not supported'),
    ('val', 'tile_overlapp', 'unknown option val.tile_overlapp'),
])
def test_unknown_option_keys_raise(tiny_net, tmp_path, section, key, match):
    opt = _opt(tmp_path)
    opt[section][key] = {'type': 'L1Loss'} if key.endswith('opt') else True
    with pytest.raises(ValueError, match=match):
        build_model(opt)


@pytest.mark.parametrize('train,match', [
    ({'stage_weights': [1, -1]}, 'stage_weights'), ({'stage_weights': [0, 0]}, 'stage_weights'),
    ({'grad_clip': 0}, 'grad_clip'), ({'max_nonfinite_steps': 0}, 'max_nonfinite_steps'),
    ({'bf16': 'yes'}, 'bf16'), ({'pixel_opt': None}, 'pixel_opt is required'),
])
def test_bad_option_values_raise(tmp_path, train, match):
    with pytest.raises(ValueError, match=match):
        check_options(_opt(tmp_path, train=train))


def test_every_known_train_key_is_documented():
    doc = UnfoldingRestorationModel.__doc__
    assert all(f'{k}' in doc for k in TRAIN_KEYS)


# ---------------------------------------------------------------------------------------------- validation
def test_validation_reports_per_label_metrics_and_csv(tiny_net, tmp_path):
    from basicsr.metrics import calculate_psnr
    from basicsr.utils import tensor2img

    labels = ('noise', 'dark', 'noise_dark')
    root = _write_pairs(str(tmp_path / 'data'), labels=labels, n=2)
    model = build_model(_opt(tmp_path, is_train=True, val={'save_img': True}))
    loader = torch.utils.data.DataLoader(LabelledPairs(root, labels), batch_size=1, shuffle=False)
    model.validation(loader, 7, None, save_img=True)
    with open(model.metrics_csv_path) as f:
        rows = list(csv.DictReader(f))
    assert os.path.basename(model.metrics_csv_path) == 'pairs_7.csv'
    assert [r['label'] for r in rows] == [*labels, 'mean_over_labels', 'overall']
    by = {r['label']: r for r in rows}
    # independent per-image PSNR with BasicSR's runner on the model's own restorations
    psnr, harm = {label: [] for label in labels}, {label: [] for label in labels}
    for data in loader:
        model.feed_data(data)
        model.test()
        gt = tensor2img([data['gt'][0]])
        out_psnr = calculate_psnr(tensor2img([model.output[0]]), gt, crop_border=0)
        psnr[data['label_name'][0]].append(out_psnr)
        harm[data['label_name'][0]].append(out_psnr < calculate_psnr(tensor2img([data['lq'][0]]), gt, 0) - 0.5)
    for label in labels:
        assert int(by[label]['images']) == 2
        assert float(by[label]['psnr']) == pytest.approx(np.mean(psnr[label]), abs=1e-5)
        # the harm rate: the share of images more than 0.5 dB below their input's PSNR
        assert float(by[label]['harm']) == pytest.approx(np.mean(harm[label]), abs=1e-6)
    assert float(by['overall']['harm']) == pytest.approx(np.mean(sum(harm.values(), [])), abs=1e-6)
    assert 'harm' not in model.metric_results  # logged and written, not one of BasicSR's tracked metrics
    assert float(by['mean_over_labels']['psnr']) == pytest.approx(np.mean([np.mean(v) for v in psnr.values()]),
                                                                  abs=1e-5)
    assert float(by['overall']['psnr']) == pytest.approx(np.mean(sum(psnr.values(), [])), abs=1e-5)
    assert 0 < float(by['overall']['ssim']) <= 1
    assert model.metric_results['psnr'] == pytest.approx(float(by['mean_over_labels']['psnr']), abs=1e-5)
    assert model.best_metric_results['pairs/dark']['psnr']['iter'] == 7
    for label in labels:
        for i in range(2):
            assert os.path.isfile(tmp_path / 'exp' / 'visualization' / 'pairs' / label / f'{i:03d}_7.png')
    # a later, worse validation keeps the best per label
    best = model.best_metric_results['pairs/noise']['psnr']['val']
    with torch.no_grad():
        for p in model.net_g_ema.parameters():
            p.add_(0.5)
    model.validation(loader, 9, None, save_img=False)
    assert model.best_metric_results['pairs/noise']['psnr'] == {'better': 'higher', 'val': best, 'iter': 7}
    assert os.path.isfile(tmp_path / 'exp' / 'metrics' / 'pairs_9.csv')


def test_validation_without_labels_reports_overall(tiny_net, tmp_path):
    root = _write_pairs(str(tmp_path / 'data'), labels=('only',), n=3)
    model = build_model(_opt(tmp_path, is_train=False))
    ds = _paired_dataset({'name': 'plain', 'phase': 'val', 'scale': 1, 'io_backend': {'type': 'disk'},
                             'filename_tmpl': '{}', 'dataroot_gt': os.path.join(root, 'only', 'gt'),
                             'dataroot_lq': os.path.join(root, 'only', 'lq')})
    model.validation(torch.utils.data.DataLoader(ds, batch_size=1), 'tiny', None, save_img=False)
    with open(model.metrics_csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [(r['label'], r['images']) for r in rows] == [('overall', '3')]
    assert model.metric_results['psnr'] == pytest.approx(float(rows[0]['psnr']), abs=1e-5)


# --------------------------------------------------------------------------------------------- checkpoints
def test_save_and_load_round_trip_with_clear_errors(tiny_net, tmp_path):
    model = build_model(_opt(tmp_path))
    model.feed_data(_batch())
    model.optimize_parameters(1)
    model.save(0, 1)
    pth = tmp_path / 'exp' / 'models' / 'net_g_1.pth'
    ckpt = torch.load(pth, weights_only=True)
    assert set(ckpt) == {'params', 'params_ema'}
    state = torch.load(tmp_path / 'exp' / 'training_states' / '1.state', weights_only=True)
    assert state['iter'] == 1 and len(state['optimizers']) == 1
    opt2 = _opt(tmp_path)
    opt2['path']['pretrain_network_g'] = str(pth)
    model2 = build_model(opt2)
    assert all(torch.equal(a, b) for a, b in zip(_params(model.net_g), _params(model2.net_g)))
    assert all(torch.equal(a, b) for a, b in zip(_params(model.net_g_ema), _params(model2.net_g_ema)))
    model2.resume_training(state)
    assert not [f for f in os.listdir(tmp_path / 'exp' / 'models') if f.endswith('.tmp')]

    truncated = tmp_path / 'trunc.pth'
    truncated.write_bytes(pth.read_bytes()[:200])
    with pytest.raises(RuntimeError, match='cannot load checkpoint .*trunc.pth'):
        model2.load_network(model2.net_g, str(truncated))
    wrong = {'params': {**ckpt['params'], 'stages.1.0.weight': torch.zeros(4, 3, 3, 3)}}
    torch.save(wrong, tmp_path / 'wrong.pth')
    with pytest.raises(RuntimeError, match=r'wrong.pth.*shape mismatches \(1\): stages.1.0.weight'):
        model2.load_network(model2.net_g, str(tmp_path / 'wrong.pth'))
    model2.load_network(model2.net_g, str(tmp_path / 'wrong.pth'), strict=False)  # skips the mismatched key
    with pytest.raises(KeyError, match=r"ema_only.pth has no 'state_dict' entry"):
        model2.load_network(model2.net_g, str(_ema_only(tmp_path, ckpt)), param_key='state_dict')
    torch.save({'params': {'x': torch.nn.Identity()}}, tmp_path / 'pickled.pth')
    with pytest.raises(RuntimeError, match='refused for safety'):
        load_checkpoint(str(tmp_path / 'pickled.pth'))


def _ema_only(tmp_path, ckpt):
    path = tmp_path / 'ema_only.pth'
    torch.save({'params_ema': ckpt['params_ema']}, path)
    return path


def _keep_saving(path, start, done, blob):
    """Child process: save ever newer versions of a 32 MB checkpoint, counting the completed saves. Only
    single-threaded torch work here: a forked child must not enter the parent's OpenMP pool."""
    for version in range(start, start + 100_000):
        blob[0] = version
        atomic_torch_save({'params': {'version': torch.tensor(version), 'blob': blob}}, path)
        done.value += 1


def test_kill_during_checkpoint_write_leaves_previous_latest_loadable(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context('fork')  # the child inherits the imported modules: no start-up cost
    path = str(tmp_path / 'net_g_latest.pth')
    atomic_torch_save({'params': {'version': torch.tensor(0), 'blob': torch.zeros(1)}}, path)
    rng = random.Random(0)
    versions = [0]
    blob = torch.zeros(8_000_000)
    mid_write = 0  # kills that hit a save in progress (its temporary file is left behind)
    for _ in range(5):
        done = ctx.Value('i', 0)
        proc = ctx.Process(target=_keep_saving, args=(path, versions[-1] + 1, done, blob))
        proc.start()
        deadline = time.time() + 60
        while done.value < 1 and time.time() < deadline:  # one full save done: the next one is in flight
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=30)
        mid_write += any(name.endswith('.tmp') for name in os.listdir(tmp_path))
        state = load_checkpoint(path)['params']  # never a partial file
        version = int(state['version'])
        assert version > versions[-1] and state['blob'][0] == version
        versions.append(version)
    assert mid_write >= 2, 'the kills should land inside writes; make the checkpoint bigger if they do not'
    # the stale temporary file of a killed writer is removed by the next save
    atomic_torch_save({'params': {'version': torch.tensor(-1)}}, path)
    assert sorted(os.listdir(tmp_path)) == ['net_g_latest.pth']


def test_non_atomic_write_would_be_caught(tmp_path):
    """The kill test can fail: a torch.save cut short leaves a file that load_checkpoint rejects."""
    path = tmp_path / 'partial.pth'
    torch.save({'params': {'blob': torch.randn(1000)}}, path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(RuntimeError, match='partial.pth'):
        load_checkpoint(str(path))


def test_options_are_not_mutated_by_checking(tmp_path):
    opt = _opt(tmp_path)
    saved = copy.deepcopy(opt)
    check_options(opt)
    assert opt == saved
