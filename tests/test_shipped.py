"""Shipped weights (issue 24): the manifest and its hash check, ``interir ship``, ``interir infer`` without an option
file (and ``--maps``), and ``interir bench -opt pretrained:NAME``.

Every test but the last two builds a weights folder with a tiny InterIR packed as ``InterIR-S`` and points
``$INTERIR_WEIGHTS_DIR`` at it (the subprocesses inherit it); the manifest's own test and the last one check the
package's released InterIR-S.
"""
import csv
import json
import os
import subprocess
import sys
import types

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs import build_network

from conftest import REPO, photo_crop, write_tiny_cdd, write_yaml
from interir_plugin import weights
from interir_plugin.cli import main
from interir_plugin.tools.bench import data_blocks, resolve_models
from interir_plugin.tools.options import check_option_file
from interir_plugin.tools.ship import ship

TINY = {'type': 'InterIR', 'num_feat': 8, 'num_stages': 1, 'num_experts': 2, 'expand': 1}
METRICS = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A weights folder named by ``$INTERIR_WEIGHTS_DIR`` whose ``InterIR-S`` is a tiny InterIR packed by ``ship``
    (float16, 32-pixel tiles)."""
    folder = tmp_path / 'weights'
    folder.mkdir()
    entry = {'description': 'a tiny InterIR for the tests', 'file': 'InterIR-S.pth', 'sha256': None,
             'dtype': 'float16', 'param_key': 'params', 'iterations': None, 'train_seconds': None, 'tile': 32,
             'tile_overlap': 8, 'network_g': TINY}
    write_yaml(folder / weights.MANIFEST, {'InterIR-S': entry})
    monkeypatch.setenv(weights.ENV_VAR, str(folder))
    torch.manual_seed(0)
    net = build_network(dict(TINY))
    torch.save({'params_ema': net.state_dict()}, tmp_path / 'net_g_latest.pth')
    packed = ship(str(tmp_path / 'net_g_latest.pth'), param_key='params_ema', iterations=7, train_seconds=1.5)
    return types.SimpleNamespace(folder=folder, net=net, packed=packed, file=str(folder / 'InterIR-S.pth'))


def _spy_torch_load(monkeypatch):
    calls, real = [], torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', spy)
    return calls


def _image(path, size=(44, 60), name='chelsea'):
    assert cv2.imwrite(str(path), np.ascontiguousarray(photo_crop(name, size, 30, 40)[:, :, ::-1]))
    return str(path)


# --------------------------------------------------------------------------------------------- manifest, loader
def test_the_package_manifest_matches_its_recipe_and_its_file():
    manifest = weights.read_manifest(os.path.join(REPO, 'interir_plugin', 'weights'))
    assert weights.DEFAULT_MODEL in manifest
    for name, entry in manifest.items():
        with open(os.path.join(REPO, entry['recipe'])) as f:
            recipe = yaml.safe_load(f)
        assert entry['network_g'] == recipe['network_g'], f'{name}: manifest network_g differs from {entry["recipe"]}'
        build_network(dict(entry['network_g']))
        path = os.path.join(REPO, 'interir_plugin', 'weights', entry['file'])
        if os.path.isfile(path):  # released: small enough, and its hash is the manifest's
            assert os.path.getsize(path) <= weights.MAX_FILE_BYTES
            assert weights.file_sha256(path) == entry['sha256']
        else:
            assert entry['sha256'] is None, f'{name}: the manifest has a hash but {path} is absent'


def test_ship_writes_the_file_and_records_its_hash(shipped):
    entry = weights.shipped_entry('InterIR-S')
    assert entry['sha256'] == shipped.packed['sha256'] == weights.file_sha256(shipped.file)
    assert (entry['iterations'], entry['train_seconds'], entry['dtype']) == (7, 1.5, 'float16')
    stored = torch.load(shipped.file, weights_only=True)['params']  # the EMA weights, under the entry's key
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    assert shipped.packed['bytes'] <= weights.MAX_FILE_BYTES and shipped.packed['max_output_change'] < 1e-2
    assert 'a tiny InterIR' in (shipped.folder / weights.MANIFEST).read_text()  # the rest of the manifest is kept


def test_load_shipped_uses_weights_only_and_casts_float16_to_float32(shipped, monkeypatch):
    calls = _spy_torch_load(monkeypatch)
    net = weights.load_shipped('InterIR-S')
    assert calls and all(c.get('weights_only') is True for c in calls)
    assert not net.training
    for key, value in net.state_dict().items():
        original = shipped.net.state_dict()[key]
        if original.is_floating_point():
            assert value.dtype == torch.float32
            assert torch.equal(value, original.half().float()), key
    opt = weights.shipped_options('InterIR-S')
    assert opt['name'] == f'InterIR-S@{shipped.packed["sha256"][:8]}' and opt['val'] == {'tile': 32, 'tile_overlap': 8}


@pytest.mark.parametrize('damage', ['truncate', 'flip'])
def test_a_corrupted_file_is_refused_before_it_is_loaded(shipped, monkeypatch, damage):
    data = bytearray(open(shipped.file, 'rb').read())
    if damage == 'truncate':
        data = data[:len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    open(shipped.file, 'wb').write(bytes(data))
    calls = _spy_torch_load(monkeypatch)
    with pytest.raises(ValueError) as err:
        weights.load_shipped('InterIR-S')
    message = str(err.value)
    assert shipped.file in message and shipped.packed['sha256'] in message
    assert weights.file_sha256(shipped.file) in message and 'corrupt' in message
    assert calls == []  # torch never saw the file
    with pytest.raises(SystemExit, match='truncated or corrupt'):
        main(['infer', '--input', _image(shipped.folder.parent / 'a.png'), '--output', str(shipped.folder / 'o')])


def test_absent_unreleased_and_unknown_models_say_so(shipped):
    with pytest.raises(ValueError, match=r"no shipped model 'InterIR-X'; shipped: InterIR-S"):
        weights.load_shipped('InterIR-X')
    from interir_plugin.tools.ship import set_manifest_fields

    set_manifest_fields('InterIR-S', {'sha256': None})
    with pytest.raises(ValueError, match='not released'):
        weights.load_shipped('InterIR-S')
    os.remove(shipped.file)
    with pytest.raises(FileNotFoundError, match=r'not installed: .*InterIR-S\.pth is absent'):
        weights.load_shipped('InterIR-S')
    with pytest.raises(SystemExit, match='interir infer: the weights of the shipped model InterIR-S are not installed'):
        main(['infer', '--input', _image(shipped.folder.parent / 'a.png'), '--output', str(shipped.folder / 'o')])


# ------------------------------------------------------------------------------------------------------ infer
def test_infer_without_an_option_file_uses_the_shipped_model(shipped, tmp_path, capsys):
    src = tmp_path / 'in'
    src.mkdir()
    rgb = _image(src / 'rgb.png')
    grey16 = cv2.cvtColor(photo_crop('coffee', (37, 29)), cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    assert cv2.imwrite(str(src / 'grey16.tif'), grey16)
    rgba = np.dstack([photo_crop('rocket', (20, 22))[:, :, ::-1], np.full((20, 22), 77, np.uint8)])
    assert cv2.imwrite(str(src / 'rgba.png'), rgba)
    assert main(['infer', '--input', str(src), '--output', str(tmp_path / 'out')]) == 0
    printed = capsys.readouterr().out
    assert 'shipped InterIR-S' in printed and shipped.file in printed and shipped.packed['sha256'][:12] in printed
    for name in ('rgb.png', 'grey16.tif', 'rgba.png'):
        a = cv2.imread(str(src / name), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / 'out' / name), cv2.IMREAD_UNCHANGED)
        assert b is not None and (b.shape, b.dtype) == (a.shape, a.dtype), name
    assert sorted(os.listdir(tmp_path / 'out')) == ['grey16.tif', 'rgb.png', 'rgba.png']  # no maps unless asked
    # pretrained:NAME names the same model
    assert main(['infer', '-opt', 'pretrained:InterIR-S', '--input', rgb, '--output', str(tmp_path / 'again')]) == 0
    again, first = (cv2.imread(str(tmp_path / folder / 'rgb.png')) for folder in ('again', 'out'))
    assert np.array_equal(again, first)


@pytest.mark.parametrize('tile', [32, 0], ids=['tiled', 'whole'])
def test_infer_maps_beside_each_output(shipped, tmp_path, tile):
    src = _image(tmp_path / 'photo.png', (44, 60))
    plain, mapped = str(tmp_path / 'plain'), str(tmp_path / 'mapped')
    assert main(['infer', '--input', src, '--output', plain, '--tile', str(tile)]) == 0
    assert main(['infer', '--input', src, '--output', mapped, '--tile', str(tile), '--maps']) == 0
    # the image is the one restored without --maps (the same pass gives both)
    assert np.array_equal(cv2.imread(os.path.join(plain, 'photo.png')), cv2.imread(os.path.join(mapped, 'photo.png')))
    for key, channels in (('gain', 1), ('transmission', 1), ('airlight', 3), ('layer', 3), ('streak', 3)):
        img = cv2.imread(os.path.join(mapped, f'photo_{key}.png'), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.shape[:2] == (44, 60) and (img.ndim == 2) == (channels == 1), key
    record = json.load(open(os.path.join(mapped, 'photo_maps.json')))
    assert record['size'] == [44, 60] and record['input'] == src and 'shipped InterIR-S' in record['weights']
    assert set(record['maps']) == {'gain', 'transmission', 'airlight', 'layer', 'streak'}
    assert record['maps']['transmission']['min'] <= record['maps']['transmission']['mean'] <= 1 + 1e-6
    presence = record['presence']
    assert presence['parts'] == ['low', 'haze', 'rain', 'snow']
    assert all(0 <= p <= 1 for p in presence['probability'] + presence['gates'])
    assert len(record['airlight_per_channel']) == 3
    tiles = presence['per_tile']  # 44 x 60 in 32-pixel tiles, overlap >= 8: rows at 0, 12; columns at 0, 24, 28
    assert [t['box'] for t in tiles] == ([[y, x, 32, 32] for y in (0, 12) for x in (0, 24, 28)] if tile else [])
    assert all(len(t['probability']) == len(t['gates']) == 4 for t in tiles)


def test_infer_maps_refuses_colliding_targets_and_networks_without_maps(shipped, tmp_path):
    src = tmp_path / 'in'
    src.mkdir()
    _image(src / 'a.png')
    _image(src / 'a_gain.png')  # a.png's gain map would overwrite a_gain.png's output
    with pytest.raises(SystemExit, match='would both write'):
        main(['infer', '--input', str(src), '--output', str(tmp_path / 'o'), '--maps'])
    assert not os.path.exists(tmp_path / 'o')
    dgunet = {'type': 'DGUNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4, 'depth': 1}
    torch.save({'params': build_network(dict(dgunet)).state_dict()}, tmp_path / 'd.pth')
    opt = write_yaml(tmp_path / 'd.yml', {'name': 'd', 'network_g': dgunet,
                                          'path': {'pretrain_network_g': str(tmp_path / 'd.pth')}})
    with pytest.raises(SystemExit, match='--maps needs a network with a physical head'):
        main(['infer', '-opt', opt, '--input', str(src / 'a.png'), '--output', str(tmp_path / 'o'), '--maps'])


# ------------------------------------------------------------------------------------------------------ bench
def test_bench_data_specs_and_the_shipped_option_file(shipped, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder, = data_blocks([write_tiny_cdd('data', labels=('low',))])
    assert folder['name'] == 'data' and folder['cdd11'] == {'root': 'data', 'categories': ['low']}
    loro, = data_blocks(['minicdd_loro:test'])
    assert (loro['name'], loro['protocol'], loro['protocol_split']) == ('minicdd_loro_test', 'minicdd_loro', 'test')
    with pytest.raises(KeyError, match="no split 'nope'"):
        data_blocks(['minicdd_loro:nope'])
    with pytest.raises(ValueError, match='neither a folder'):
        data_blocks(['nothing_here'])
    with pytest.raises(ValueError, match='needs test data'):
        resolve_models(['pretrained:InterIR-S'], 'lb')
    with pytest.raises(ValueError, match='none is given'):
        resolve_models(['x.yml'], 'lb', data=['data'])
    paths, training = resolve_models(['pretrained:InterIR-S'], 'lb', data=['data', 'minicdd_loro:test'])
    opt = check_option_file(paths[0], is_train=False)  # what BasicSR's test pipeline is given
    name = f'InterIR-S@{shipped.packed["sha256"][:8]}'
    assert opt['name'] == name and training == {name: {'iters': 7, 'train_seconds': 1.5}}
    assert [d['name'] for d in opt['datasets'].values()] == ['data', 'minicdd_loro_test']
    assert opt['path']['pretrain_network_g'] == shipped.file and opt['network_g'] == TINY


def test_bench_row_of_the_shipped_model_beside_an_option_file(shipped, tmp_path):
    write_tiny_cdd(str(tmp_path / 'data'), labels=('low',))
    torch.save({'params': build_network(dict(TINY)).state_dict()}, tmp_path / 'mine.pth')
    mine = write_yaml(tmp_path / 'mine.yml', {
        'name': 'mine', 'model_type': 'UnfoldingRestorationModel', 'num_gpu': 0, 'network_g': TINY,
        'path': {'pretrain_network_g': str(tmp_path / 'mine.pth'), 'param_key_g': 'params', 'strict_load_g': True},
        'datasets': {'test_1': {'name': 'Tiny', 'type': 'MultiDegradationPairedDataset',
                                'cdd11': {'root': 'data', 'categories': ['low']}, 'io_backend': {'type': 'disk'}}},
        'val': {'save_img': False, 'metrics': METRICS}})
    env = {**os.environ, 'OMP_WAIT_POLICY': 'PASSIVE', 'OMP_NUM_THREADS': '1'}  # $INTERIR_WEIGHTS_DIR included
    out = subprocess.run([sys.executable, '-m', 'interir_plugin', 'bench', '-opt', mine, '-opt', 'pretrained:InterIR-S',
                          '--out', 'lb', '--repeats', '1', '--device', 'cpu'], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    with open(tmp_path / 'lb' / 'leaderboard.csv') as f:
        rows = {r['model']: r for r in csv.DictReader(f)}
    name = f'InterIR-S@{shipped.packed["sha256"][:8]}'
    assert set(rows) == {'mine', name, 'input (no restoration)'}
    assert rows[name]['dataset'] == 'Tiny' and rows[name]['network'] == 'InterIR' and rows[name]['iters'] == '7'
    assert {'psnr_low', 'harm_low', 'harm_mean'} <= set(rows[name])
    assert f'on the datasets of {mine}' in out.stdout and f'| {name} |' in out.stdout


# ------------------------------------------------------------------------------------------ the released weights
def test_the_released_weights_restore_a_photo_and_a_renderer_they_never_saw(monkeypatch):
    """The package's own InterIR-S, loaded as users load it (hash checked, weights_only), on a test photo darkened by
    the held-out ``camera`` low-light model: far above the input (+9 dB on the LORO test split's low label)."""
    from interir_plugin.data.renderers import RENDERERS

    monkeypatch.delenv('INTERIR_WEIGHTS_DIR', raising=False)
    net = weights.load_shipped('InterIR-S')
    clean = photo_crop('chelsea', (128, 128), 60, 120).astype(np.float32) / 255
    dark, _ = RENDERERS['low_light']['camera'](clean, rng=3)
    with torch.no_grad():
        out = net(torch.from_numpy(np.ascontiguousarray(dark.transpose(2, 0, 1)))[None])
    out = (out[-1] if isinstance(out, (list, tuple)) else out)[0].clamp(0, 1).numpy().transpose(1, 2, 0)
    psnr = lambda x: 10 * np.log10(1 / np.mean((x - clean) ** 2))  # noqa: E731
    assert psnr(out) > psnr(dark) + 3, (psnr(dark), psnr(out))
