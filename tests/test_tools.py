"""User tools: interir profile, infer, explain, bench and demo, on tiny generated inputs.

profile/infer/explain run in-process through the ``interir`` entry point; bench and demo run BasicSR's
pipelines and go through a subprocess, as a user's shell would (BasicSR configures process-wide logging).
"""
import csv
import glob
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs import build_network
from basicsr.metrics import calculate_psnr

from conftest import REPO, photo_crop, write_tiny_cdd, write_yaml
from interir_plugin.cli import main
from interir_plugin.tools import imageio, leaderboard
from interir_plugin.tools.infer import infer
from interir_plugin.tools.loading import build_restorer, resolve_device
from interir_plugin.tools.options import load_option_file

TINY_INTERIR = {'type': 'InterIR', 'num_feat': 8, 'num_stages': 1, 'num_experts': 2, 'expand': 1}
TINY_DGUNET = {'type': 'DGUNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4, 'depth': 1}
TINY_SWINIR = {'type': 'SwinIR', 'upscale': 1, 'in_chans': 3, 'img_size': 32, 'window_size': 8, 'img_range': 1.0,
               'depths': [1], 'embed_dim': 16, 'num_heads': [2], 'mlp_ratio': 2, 'upsampler': '',
               'resi_connection': '1conv'}
METRICS = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False},
           'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': False}}
BENCH_DIR = os.path.join(REPO, 'options', 'bench')


pytestmark = pytest.mark.usefixtures('one_thread')


def _weights(tmp_path, network_g, name):
    """Save a randomly initialised ``network_g`` as a BasicSR checkpoint; return its path."""
    torch.manual_seed(0)
    net = build_network(dict(network_g))
    path = str(tmp_path / f'{name}.pth')
    torch.save({'params': net.state_dict()}, path)
    return path


def _option(tmp_path, network_g, name, weights=True, **extra):
    opt = {'name': name, 'model_type': 'UnfoldingRestorationModel', 'num_gpu': 0, 'manual_seed': 0,
           'network_g': network_g,
           'path': {'pretrain_network_g': _weights(tmp_path, network_g, name) if weights else None,
                    'param_key_g': 'params', 'strict_load_g': True}, **extra}
    return write_yaml(tmp_path / f'{name}.yml', opt)


def _write(path, img):
    assert cv2.imwrite(str(path), img)
    return str(path)


def _samples(folder):
    """Grey, RGB, RGBA, 16-bit RGB and 16-bit grey images of odd sizes (real photo content)."""
    os.makedirs(folder, exist_ok=True)
    rgb = photo_crop('astronaut', (41, 30), 60, 180)
    bgr = rgb[:, :, ::-1]
    alpha = np.random.default_rng(0).integers(0, 256, (20, 22), dtype=np.uint8)
    grey16 = (cv2.cvtColor(photo_crop('coffee', (33, 35)), cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257 + 3)
    return {
        'grey.png': _write(f'{folder}/grey.png', cv2.cvtColor(photo_crop('chelsea', (37, 53)), cv2.COLOR_RGB2GRAY)),
        'rgb.png': _write(f'{folder}/rgb.png', np.ascontiguousarray(bgr)),
        'rgba.png': _write(f'{folder}/rgba.png', np.dstack([photo_crop('rocket', (20, 22))[:, :, ::-1], alpha])),
        'deep.png': _write(f'{folder}/deep.png', (photo_crop('coffee', (33, 35))[:, :, ::-1].astype(np.uint16) * 257)),
        'grey16.tif': _write(f'{folder}/grey16.tif', grey16),
    }


# ------------------------------------------------------------------------------------------------- image rules
@pytest.mark.parametrize('name', ['grey.png', 'rgb.png', 'rgba.png', 'deep.png', 'grey16.tif'])
def test_image_rules_round_trip_exactly(tmp_path, name):
    src = _samples(tmp_path / 'in')[name]
    original = cv2.imread(src, cv2.IMREAD_UNCHANGED)
    img = imageio.read_image(src)
    assert img.rgb.dtype == np.float32 and img.rgb.shape == (*original.shape[:2], 3)
    assert 0 <= img.rgb.min() and img.rgb.max() <= 1
    imageio.write_image(str(tmp_path / name), img.network_input(3), img)  # an identity "network"
    back = cv2.imread(str(tmp_path / name), cv2.IMREAD_UNCHANGED)
    assert back.dtype == original.dtype and back.shape == original.shape
    np.testing.assert_array_equal(back, original)


def test_image_rules_channel_conversions(tmp_path):
    files = _samples(tmp_path / 'in')
    rgb = imageio.read_image(files['rgb.png'])
    luma = rgb.network_input(1)  # RGB -> BT.601 luminance for a one-channel network
    expected = (rgb.rgb * np.array([0.299, 0.587, 0.114], np.float32)).sum(2)
    np.testing.assert_allclose(luma[0], expected, atol=1e-6)
    imageio.write_image(str(tmp_path / 'from_grey_net.png'), luma, rgb)  # 1-channel output into an RGB file
    back = cv2.imread(str(tmp_path / 'from_grey_net.png'), cv2.IMREAD_UNCHANGED)
    assert back.shape == (41, 30, 3) and (back[..., 0] == back[..., 2]).all()
    flt = np.random.default_rng(1).random((4, 5), dtype=np.float32)  # float images are taken as they are
    img = imageio.read_image(_write(tmp_path / 'f.tif', flt))
    assert img.mode == 'grey' and img.dtype == np.float32 and np.array_equal(img.rgb[..., 1], flt)
    imageio.write_image(str(tmp_path / 'out' / 'f.tif'), img.network_input(3), img)  # float in -> float32 out
    back = cv2.imread(str(tmp_path / 'out' / 'f.tif'), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.float32 and np.allclose(back, flt, atol=1e-6)  # BT.601 of a grey triple: rounding only
    with pytest.raises(ValueError, match=r'i32\.tif: unsupported pixel type int32'):
        imageio.read_image(_write(tmp_path / 'i32.tif', np.zeros((4, 4), np.int32)))
    with pytest.raises(ValueError, match=r'cannot decode image .*junk\.png'):
        (tmp_path / 'junk.png').write_bytes(b'not an image')
        imageio.read_image(str(tmp_path / 'junk.png'))
    with pytest.raises(ValueError, match='cannot read image'):
        imageio.read_image(str(tmp_path / 'missing.png'))


# ------------------------------------------------------------------------------------------------------ infer
def test_infer_keeps_size_mode_and_depth_and_matches_the_model(tmp_path):
    files = _samples(tmp_path / 'in')
    opt_path = _option(tmp_path, TINY_INTERIR, 'tiny')
    assert main(['infer', '-opt', opt_path, '--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out'),
                 '--tile', '24', '--tile-overlap', '8']) == 0
    for name, src in files.items():
        a, b = cv2.imread(src, cv2.IMREAD_UNCHANGED), cv2.imread(str(tmp_path / 'out' / name), cv2.IMREAD_UNCHANGED)
        assert b is not None and (b.shape, b.dtype) == (a.shape, a.dtype), name
    rgba_in = cv2.imread(files['rgba.png'], cv2.IMREAD_UNCHANGED)
    rgba_out = cv2.imread(str(tmp_path / 'out' / 'rgba.png'), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(rgba_out[..., 3], rgba_in[..., 3])  # alpha passes through untouched

    # whole-image inference of one RGB file equals the model class's own restore (channel order, scaling)
    infer(opt_path, files['rgb.png'], str(tmp_path / 'whole'), progress=False)
    model = build_restorer(load_option_file(opt_path), resolve_device('cpu'), opt_path)
    x = torch.from_numpy(cv2.cvtColor(cv2.imread(files['rgb.png']), cv2.COLOR_BGR2RGB).transpose(2, 0, 1) / 255.)
    model.net_g.eval()
    with torch.no_grad():
        expected = model.restore(x[None].float()).clamp(0, 1)[0].numpy().transpose(1, 2, 0)
    got = cv2.cvtColor(cv2.imread(str(tmp_path / 'whole' / 'rgb.png')), cv2.COLOR_BGR2RGB) / 255.
    assert np.abs(got - expected).max() <= 0.5 / 255 + 1e-6


def test_infer_never_overwrites_inputs(tmp_path):
    files = _samples(tmp_path / 'in')
    before = {n: open(p, 'rb').read() for n, p in files.items()}
    opt_path = _option(tmp_path, TINY_INTERIR, 'tiny')
    for target in (tmp_path / 'in', tmp_path / 'in' / '.'):
        with pytest.raises(SystemExit, match='input folder'):
            main(['infer', '-opt', opt_path, '--input', str(tmp_path / 'in'), '--output', str(target)])
    os.symlink(tmp_path / 'in', tmp_path / 'link')
    with pytest.raises(SystemExit, match='input folder'):
        main(['infer', '-opt', opt_path, '--input', files['rgb.png'], '--output', str(tmp_path / 'link')])
    assert {n: open(p, 'rb').read() for n, p in files.items()} == before
    with pytest.raises(SystemExit, match='no such file'):
        main(['infer', '-opt', opt_path, '--input', str(tmp_path / 'nope'), '--output', str(tmp_path / 'o')])


# ---------------------------------------------------------------------------------------------------- profile
@pytest.mark.parametrize('network_g', [TINY_INTERIR, TINY_SWINIR], ids=['InterIR', 'SwinIR_basicsr'])
def test_profile_prints_json_for_plugin_and_basicsr_archs(tmp_path, capsys, network_g):
    opt_path = _option(tmp_path, network_g, 'p', weights=False)
    assert main(['profile', '-opt', opt_path, '--size', '32', '32', '--repeats', '2', '--warmup', '0']) == 0
    result = json.loads(capsys.readouterr().out)
    assert result['network'] == network_g['type'] and result['input_shape'] == [3, 32, 32]
    assert result['params'] == sum(p.numel() for p in build_network(dict(network_g)).parameters())
    assert result['macs'] > 0 and result['latency_min_ms'] <= result['latency_ms'] <= result['latency_max_ms']
    assert result['peak_memory_mb'] > 0 and result['repeats'] == 2


# ---------------------------------------------------------------------------------------------------- explain
def test_explain_interir_figure_and_numbers(tmp_path):
    lq = _write(tmp_path / 'lq.png', photo_crop('chelsea', (40, 44))[:, :, ::-1])  # 44: not a multiple of 8
    gt = _write(tmp_path / 'gt.png', photo_crop('chelsea', (40, 44), 2, 2)[:, :, ::-1])
    opt_path = _option(tmp_path, TINY_INTERIR, 'ex')
    assert main(['explain', '-opt', opt_path, '--input', lq, '--gt', gt, '--out', str(tmp_path / 'ex')]) == 0
    figure = cv2.imread(str(tmp_path / 'ex' / 'explain.png'))
    assert figure is not None and figure.shape[0] > 400 and figure.shape[1] > 400
    numbers = json.load(open(tmp_path / 'ex' / 'explain.json'))
    stages = TINY_INTERIR['num_stages'] + 1
    assert numbers['stages'] == stages and numbers['weights'].endswith('ex.pth')
    for key in ('residual', 'eta', 'alpha_mean', 'gamma_mean', 'active_set_mean', 'active_set_map', 'P', 'Q',
                'stage_psnr'):
        assert len(numbers[key]) == stages, key
    assert all(abs(sum(a) - 1) < 1e-3 for a in numbers['alpha_mean'])
    assert all(0 < g < 1 for row in numbers['gamma_mean'] for g in row)
    assert len(numbers['gamma_mean'][0]) == len(numbers['prior_names']) == 5
    h, w = 40 // 4, 44 // 4
    assert np.shape(numbers['P'][0]) == (h, h) and np.shape(numbers['Q'][-1]) == (w, w)
    assert np.shape(numbers['active_set_map'][0]) == (h, w)
    assert all(e > 0 for e in numbers['eta']) and all(r >= 0 for r in numbers['residual'])
    stage = cv2.cvtColor(cv2.imread(str(tmp_path / 'ex' / f'stage_{stages:02d}.png')), cv2.COLOR_BGR2RGB)
    assert stage.shape == (40, 44, 3)
    psnr = calculate_psnr(stage, photo_crop('chelsea', (40, 44), 2, 2), crop_border=0, input_order='HWC')
    assert abs(psnr - numbers['stage_psnr'][-1]) < 1e-3


@pytest.mark.parametrize('flags', [{}, {'route_by_presence': True, 'streaks_by_active_set': True}])
def test_explain_shows_the_truth_beside_the_network_and_no_constant_panel(tmp_path, flags):
    """A tiny InterIR as initialised (its head is the identity: gain and transmission exactly 1) on a clean photo
    synthesised into low_haze_rain with fog (a uniform transmission): those constant maps are not drawn and
    skipped_panels says so with their value; the rest is there with the truth."""
    clean = _write(tmp_path / 'clean.png', photo_crop('chelsea', (40, 44))[:, :, ::-1])
    opt_path = _option(tmp_path, {**TINY_INTERIR, **flags}, 'ex')
    assert main(['explain', '-opt', opt_path, '--input', clean, '--category', 'low_haze_rain', '--renderers',
                 'haze=fog', '--seed', '1', '--out', str(tmp_path / 'ex'), '--device', 'cpu']) == 0
    numbers = json.load(open(tmp_path / 'ex' / 'explain.json'))
    assert numbers['drawn']['haze.renderer'] == 'fog'
    skipped = {p['panel']: p['value'] for p in numbers['skipped_panels']}
    assert skipped['gain (network)'] == 1.0 and skipped['transmission (network)'] == 1.0
    assert skipped['transmission (truth)'] == pytest.approx(numbers['true_maps']['transmission']['mean'])
    assert 'gain (truth)' not in skipped and 'layer (network)' not in skipped  # maps that vary are drawn
    presence = numbers['presence']
    assert set(presence['probability']) == {'low', 'haze', 'rain', 'snow'}
    assert all(0 <= v <= 1 for v in presence['probability'].values())
    assert presence['truth'] == {'low': True, 'haze': True, 'rain': True, 'snow': False}
    assert len(numbers['active_set_auc']['rain']) == TINY_INTERIR['num_stages'] + 1
    assert 'interir audit' in numbers['routing_per_label']
    assert cv2.imread(str(tmp_path / 'ex' / 'explain.png')) is not None
    with pytest.raises(SystemExit, match="--renderers 'fog': expected DEGRADATION=RENDERER"):
        main(['explain', '-opt', opt_path, '--input', clean, '--category', 'haze', '--renderers', 'fog', '--out',
              str(tmp_path / 'ex2'), '--device', 'cpu'])
    with pytest.raises(SystemExit, match="unknown renderer.*'smoke'.*'haze'"):
        main(['explain', '-opt', opt_path, '--input', clean, '--category', 'haze', '--renderers', 'haze=smoke',
              '--out', str(tmp_path / 'ex2'), '--device', 'cpu'])


def test_explain_map_columns_drop_constants_and_keep_what_varies():
    from interir_plugin.tools.explain_figure import is_constant, map_columns, plot_panels

    assert is_constant(np.full((4, 4), 0.3) + np.linspace(0, 0.9e-3, 16).reshape(4, 4))
    assert not is_constant([0.3, 0.302]) and is_constant([])
    ramp = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    skipped = []
    columns = map_columns({'transmission': np.full((4, 4), 0.4), 'rain': ramp, 'layer': ramp[..., None].repeat(3, 2)},
                          {'transmission': np.ones((4, 4, 1)), 'gain': np.ones((4, 4, 1)), 'streak': ramp[..., None]},
                          skipped)
    by_key = {c[0]: c for c in columns}
    assert list(by_key) == ['gain', 'transmission', 'layer', 'streak']  # MAP_COLUMNS order; no column for nothing
    assert by_key['gain'][4] is None and by_key['gain'][5] == ('constant', 1.0) and by_key['gain'][3] is None
    assert by_key['transmission'][4][0] == 'constant' and by_key['layer'][5] is None
    assert by_key['streak'][3] == (0.0, 1.0) and by_key['layer'][3] == (-1.0, 1.0)  # one scale for both sides
    assert [p['panel'] for p in skipped] == ['gain (network)', 'transmission (truth)', 'transmission (network)']
    numbers = {'residual': [1.0, 1.0], 'eta': [0.5, 0.5], 'alpha_mean': [[0.5, 0.5], [0.4, 0.6]],
               'gamma_mean': [[0.5] * 5, [0.5] * 5], 'prior_names': ['p'] * 5}
    skipped = []
    plots = plot_panels(numbers, None, None, skipped)
    assert len(plots) == 1 and {p['panel'] for p in skipped} == {'residual', 'prior gates gamma'}


def test_explain_dgunet_stage_images_and_random_weight_warning(tmp_path):
    lq = _write(tmp_path / 'lq.png', photo_crop('coffee', (32, 40))[:, :, ::-1])
    opt_path = _option(tmp_path, TINY_DGUNET, 'dg', weights=False)
    with pytest.warns(UserWarning, match='RANDOM weights'):
        assert main(['explain', '-opt', opt_path, '--input', lq, '--out', str(tmp_path / 'ex')]) == 0
    numbers = json.load(open(tmp_path / 'ex' / 'explain.json'))
    assert numbers['stages'] == TINY_DGUNET['depth'] + 2 and 'residual' not in numbers and numbers['weights'] is None
    assert len(glob.glob(str(tmp_path / 'ex' / 'stage_*.png'))) == numbers['stages']
    assert cv2.imread(str(tmp_path / 'ex' / 'explain.png')) is not None


# ------------------------------------------------------------------------------------------------------ bench
def _run(args, cwd, timeout=300, threads=None):
    # OpenMP threads that sleep instead of spinning: on a loaded machine (parallel test runs) spinning threads
    # make every small op wait for a descheduled sibling, up to 70x slower (docs/tools.md, "Speed").
    env = {**os.environ, 'OMP_WAIT_POLICY': os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')}
    if threads is not None:
        env['OMP_NUM_THREADS'] = str(threads)
    return subprocess.run([sys.executable, '-m', 'interir_plugin', *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_bench_leaderboard_with_zoo_row_and_identity(tmp_path):
    write_tiny_cdd(str(tmp_path / 'data'))
    dataset = {'test_1': {'name': 'Tiny', 'type': 'MultiDegradationPairedDataset',
                          'cdd11': {'root': 'data', 'categories': ['low', 'haze']}, 'io_backend': {'type': 'disk'}}}
    val = {'save_img': False, 'metrics': METRICS}
    ours = _option(tmp_path, TINY_INTERIR, 'tiny_interir', datasets=dataset, val=val)
    zoo_files = sorted(glob.glob(os.path.join(BENCH_DIR, 'test_*.yml')))
    assert zoo_files, f'no shipped zoo bench option files in {BENCH_DIR}'
    zoo = load_option_file(zoo_files[0])  # the shipped zoo network, on the tiny data with random weights
    zoo_path = _option(tmp_path, zoo['network_g'], 'zoo', datasets=dataset, val=val)
    out = _run(['bench', '-opt', ours, '-opt', zoo_path, '--out', 'lb', '--repeats', '1', '--device', 'cpu'], tmp_path,
               threads=1)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(tmp_path / 'lb' / 'leaderboard.csv') as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0])
    assert columns[:len(leaderboard.BASE_COLUMNS)] == list(leaderboard.BASE_COLUMNS)
    assert {'psnr_mean', 'ssim_mean', 'psnr_low', 'psnr_haze', 'ssim_low', 'ssim_haze'} <= set(columns)
    by_model = {r['model']: r for r in rows}
    assert set(by_model) == {'tiny_interir', 'zoo', leaderboard.IDENTITY_NAME}
    assert by_model['zoo']['network'] == zoo['network_g']['type'] and float(by_model['zoo']['gmacs']) > 0
    assert float(by_model['tiny_interir']['params']) == sum(
        p.numel() for p in build_network(dict(TINY_INTERIR)).parameters())
    for r in rows:  # the mean over labels is the mean of the per-label numbers
        assert abs(float(r['psnr_mean']) - (float(r['psnr_low']) + float(r['psnr_haze'])) / 2) < 1e-3
    # the baseline row is the input scored against its ground truth
    lq_gt = [(cv2.imread(str(tmp_path / 'data' / 'low' / f'{i}.png')), cv2.imread(str(tmp_path / 'data' / 'clear' /
                                                                                       f'{i}.png'))) for i in (0, 1)]
    expected = np.mean([calculate_psnr(a, b, crop_border=0) for a, b in lq_gt])
    assert abs(float(by_model[leaderboard.IDENTITY_NAME]['psnr_low']) - expected) < 1e-3
    # every row has the harm rate: a share of the images, 0 for the input itself
    assert float(by_model[leaderboard.IDENTITY_NAME]['harm_mean']) == 0
    assert all(0 <= float(r['harm_mean']) <= 1 for r in rows)
    assert cv2.imread(str(tmp_path / 'lb' / 'leaderboard.png')) is not None
    md = open(tmp_path / 'lb' / 'leaderboard.md').read()
    assert '| zoo |' in md and 'PSNR per label' in md and 'harm rate' in md and md in out.stdout
    again = _run(['bench', '-opt', ours, '--out', 'lb2', '--repeats', '1', '--device', 'cpu', '--no-identity'],
                 tmp_path, threads=1)
    assert again.returncode == 0 and 'reusing' in again.stdout, again.stderr[-3000:]


def test_leaderboard_reads_the_model_class_csv(tmp_path):
    path = tmp_path / 'm.csv'
    path.write_text('dataset,iter,label,images,psnr,ssim\nD,x,low,2,20.0,0.5\nD,x,haze,2,24.0,0.7\n'
                    'D,x,mean_over_labels,4,22.0,0.6\nD,x,overall,4,22.0,0.6\n')
    scores = leaderboard.read_metrics_csv(str(path))
    assert scores['labels'] == ['low', 'haze'] and scores['mean'] == {'psnr': 22.0, 'ssim': 0.6}
    assert scores['per_label']['haze']['ssim'] == 0.7 and scores['images'] == 4
    path.write_text('dataset,iter,label,images,psnr\nD,x,low,2,20.0\n')
    with pytest.raises(ValueError, match='overall'):
        leaderboard.read_metrics_csv(str(path))


def test_leaderboard_files_for_unlabelled_data_and_two_datasets(tmp_path):
    def row(model, dataset, psnr, per_label=None, gmacs=1.0):
        return {'model': model, 'network': 'Net', 'dataset': dataset, 'images': 3, 'params': 1000, 'gmacs': gmacs,
                'latency_ms': 5.0, 'device': 'cpu', 'metrics': ['psnr'], 'labels': list(per_label or {}),
                'per_label': per_label or {}, 'mean': {'psnr': psnr}}

    rows = [row('a', 'Plain', 20.0), row('b', 'Plain', 25.0),
            row('a', 'Labelled', 22.0, {'x': {'psnr': 21.0}, 'y': {'psnr': 23.0}}),
            {**row('input (no restoration)', 'Labelled', 18.0, {'x': {'psnr': 17.0}, 'y': {'psnr': 19.0}}),
             'params': None, 'gmacs': None, 'latency_ms': None, 'device': None}]
    files = leaderboard.write_leaderboard(rows, str(tmp_path))
    with open(files['csv']) as f:
        table = list(csv.DictReader(f))
    assert [(r['dataset'], r['model']) for r in table] == [('Plain', 'b'), ('Plain', 'a'), ('Labelled', 'a'),
                                                           ('Labelled', 'input (no restoration)')]
    assert table[3]['params'] == '' and table[2]['psnr_x'] == '21' and table[0]['psnr_x'] == ''
    md = open(files['md']).read()
    assert md.count('### ') == 2 and md.count('PSNR per label') == 1 and '| b | Net | 0.001 |' in md
    figure = cv2.imread(files['png'])
    assert figure is not None and figure.shape[0] > figure.shape[1] / 3  # one row of panels per dataset


def test_leaderboard_means_table_puts_datasets_side_by_side():
    def row(model, dataset, psnr):
        return {'model': model, 'network': 'Net', 'dataset': dataset, 'images': 2, 'metrics': ['psnr', 'harm'],
                'labels': [], 'per_label': {}, 'mean': {'psnr': psnr, 'harm': 0.25}}

    lines = leaderboard.means_table([row('a', 'Test', 20.0), row('b', 'Test', 21.0), row('a', 'LORO', 19.0),
                                     row('c', 'LORO', 18.0)])
    assert lines[0] == '| model | Test (PSNR / harm rate) | LORO (PSNR / harm rate) |'
    assert lines[2:] == ['| b | 21.00 / 25.0% | - |', '| a | 20.00 / 25.0% | 19.00 / 25.0% |',
                         '| c | - | 18.00 / 25.0% |']


# ------------------------------------------------------------------------------------------------------- demo
def test_demo_runs_itself_with_passive_openmp_threads(monkeypatch):
    calls = []
    monkeypatch.delenv('OMP_WAIT_POLICY', raising=False)
    monkeypatch.setattr(subprocess, 'call', lambda cmd, env: calls.append((cmd, env)) or 3)
    assert main(['demo', '--quick', '--out', 'somewhere', '--device', 'cpu']) == 3  # the child's exit status
    (cmd, env), = calls
    assert cmd[:4] == [sys.executable, '-m', 'interir_plugin', 'demo'] and env['OMP_WAIT_POLICY'] == 'PASSIVE'
    assert cmd[4:] == ['--out', 'somewhere', '--device', 'cpu', '--quick']


def test_demo_quick_runs_every_step(tmp_path):
    out = _run(['demo', '--quick', '--out', 'd', '--device', 'cpu'], tmp_path, timeout=600, threads=1)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    demo = tmp_path / 'd'
    for file in ('leaderboard.md', 'leaderboard.csv', 'leaderboard.png', 'explain/explain.png',
                 'explain/explain.json', 'demo.log', 'learning_curve.csv', 'learning_curve.png', 'audit/audit.json',
                 'audit/audit.md', 'audit/audit.png'):
        assert (demo / file).is_file(), file
    with open(demo / 'leaderboard.csv') as f:
        rows = list(csv.DictReader(f))
    from interir_plugin.tools.demo import DEMO_MODELS, QUICK, SCORE_SPLITS

    # every model and the input on the test split and on the leave-one-renderer-out test split (issue 22)
    assert SCORE_SPLITS == ('test', 'loro_test')
    assert len(rows) == (len(DEMO_MODELS) + 1) * len(SCORE_SPLITS)
    assert {r['dataset'] for r in rows} == {'MiniCDD_test_crops128', 'MiniCDD_loro_test_crops128'}
    assert {r['network'] for r in rows} >= {'InterIR', 'DGUNet', '-'}
    assert all(f'{m}_{label}' in rows[0] for label in QUICK['labels'] for m in ('psnr', 'ssim', 'harm'))
    assert all(r['harm_mean'] != '' and r['ssim_mean'] != '' for r in rows)
    assert all(int(r['images']) == len(QUICK['labels']) * QUICK['images_per_label'] for r in rows)
    loro = sorted(os.listdir(demo / 'score_set' / 'loro_test' / QUICK['labels'][0]))
    assert loro == sorted(os.listdir(demo / 'score_set' / 'test' / QUICK['labels'][0]))  # the same photos' crops
    assert 'MiniCDD_loro_test_crops128 (PSNR / SSIM / harm rate)' in out.stdout  # the printed side-by-side means
    trained = [r for r in rows if r['network'] != '-']  # every model trained for the same budget, with its figures
    assert all(int(r['iters']) >= 1 and float(r['train_seconds']) >= QUICK['budget'] for r in trained)
    with open(demo / 'learning_curve.csv') as f:
        curve = list(csv.DictReader(f))
    assert {p['model'] for p in curve} == {name for name, _ in DEMO_MODELS} | {'input'}
    assert all(float(p['psnr']) > 0 for p in curve)
    assert 'stage_psnr' in json.load(open(demo / 'audit' / 'audit.json'))
    assert json.load(open(demo / 'explain' / 'explain.json'))['network'] == 'InterIR'
    assert 'leaderboard:' in out.stdout and str(os.path.join('d', 'leaderboard.md')) in out.stdout
    for opt_file in glob.glob(str(demo / 'options' / 'test_*.yml')):  # the test options point at real weights
        assert os.path.isfile(tmp_path / yaml.safe_load(open(opt_file))['path']['pretrain_network_g'])
