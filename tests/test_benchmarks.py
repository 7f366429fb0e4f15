"""Every benchmark script runs (its ``--quick`` mode), the multiply-add ceiling of benchmarks/bench_interir.py
replays exactly the work mmengine counts, and the ablation's variants are the recipe with their overrides."""
import glob
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from interir_plugin.archs.econv import ChannelAttention
from interir_plugin.archs.interir_arch import InterIR
from interir_plugin.utils.complexity import model_complexity

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks')
sys.path.insert(0, BENCHMARKS)
import bench_ablation  # noqa: E402
from bench_interir import COUNTED_OPS, PRESCRIBED_OPS, counted_macs, record_ops, replay  # noqa: E402


def test_replayed_counted_ops_carry_mmengines_count():
    torch.manual_seed(0)
    net = InterIR(num_feat=8, num_stages=2, num_experts=2, expand=1).eval()
    x = torch.rand(1, 3, 32, 48)
    counted = record_ops(net, x, COUNTED_OPS)
    both = record_ops(net, x, COUNTED_OPS + PRESCRIBED_OPS)
    names = {func.overloadpacket.__name__ for func, _, _ in both}
    assert {'conv2d', 'addmm', 'matmul', 'linear', 'fft_rfft2', 'fft_irfft2', 'gelu'} <= names
    assert len(both) > len(counted)
    # beyond the products the replay holds, mmengine counts one per input element of each channel attention's
    # pooling (C x h x w, features at 1/4 resolution)
    pooled_channels = sum(m.body[1].in_channels for m in net.modules() if isinstance(m, ChannelAttention))
    pooling = pooled_channels * (32 // 4) * (48 // 4)
    # 4 per output element of the physical head's bilinear upsampling of its five maps (g, tau and the logits of
    # w_n, w_s, w'_n), once per stage output, and one per element of the recogniser's standardisation (a batch norm
    # of its statistics)
    upsampling = 4 * 5 * 32 * 48 * len(net.stages + [net.final])
    standardised = net.head.recogniser.num_stats
    assert pooling > 0
    assert counted_macs(counted) + pooling + upsampling + standardised == model_complexity(net, (3, 32, 48))['macs']
    with torch.inference_mode():
        replay(both)  # the recorded calls run again on their own copies of the inputs


def _check_ablation(doc):
    """The quick ablation trained every quick variant and the quick baseline (RIDNet, from its own option file) once
    per quick seed, each in its own experiment, on the LORO training renderers, scored them on the LORO held-out
    split, resumed once (the second pass skipped the first seed's runs) and summarised each row over its seeds with
    the spread and the verdict against InterIR-S."""
    quick = bench_ablation.QUICK
    assert doc['baselines'] == {'RIDNet': quick['baselines'][0]} == {'RIDNet': 'options/bench/train_RIDNet_MiniCDD.yml'}
    seeds, names = list(quick['seeds']), [*quick['variants'], 'RIDNet']
    assert doc['setting']['seconds'] == quick['seconds'] and doc['setting']['quick'] is True
    assert doc['setting']['train'] == list(bench_ablation.TRAIN_SPLIT) == ['minicdd_loro', 'train']
    assert doc['setting']['score'] == list(bench_ablation.SCORE_SPLIT) == ['minicdd_loro', 'heldout']
    assert doc['dataset']['protocol'] == 'minicdd_loro' and doc['dataset']['protocol_split'] == 'heldout'
    first, second = doc['passes']
    assert first == {'ran': [[n, seeds[0]] for n in names], 'skipped': []}
    assert second == {'ran': [[n, s] for s in seeds[1:] for n in names], 'skipped': first['ran']}
    runs = doc['runs']
    assert sorted((r['variant'], r['seed']) for r in runs) == sorted((n, s) for n in names for s in seeds)
    assert len({r['experiment'] for r in runs}) == len(runs)
    for r in runs:
        assert r['experiment'].endswith(f'_s{r["seed"]}') and r['dataset'] == 'minicdd_loro_heldout'
        assert r['iters'] >= 1 and r['train_seconds'] >= quick['seconds'] and r['gmacs'] > 0
        assert list(r['per_label']) == list(quick['labels']) == r['labels']
        assert set(r['mean']) == {'psnr', 'ssim', 'harm'} and 0 <= r['mean']['harm'] <= 1
    assert list(doc['variants']) == names and doc['seeds'] == seeds
    for name, v in doc['variants'].items():
        assert v['seeds'] == seeds and list(v['per_label_psnr']) == list(quick['labels'])
        assert all(v[q]['sd'] is not None for q in ('psnr', 'ssim', 'harm', 'iters'))
        vs = v['vs_base']
        if name == bench_ablation.BASE:
            assert vs is None
        else:
            assert vs['spread'] == pytest.approx(v['psnr']['sd'] + doc['variants'][bench_ablation.BASE]['psnr']['sd'])
            assert vs['verdict'] == ('separated' if abs(vs['difference']) > vs['spread'] else 'within the spread')
    plain = [r for r in runs if r['variant'] == bench_ablation.PLAIN]
    assert all(r['network_g']['num_blocks'] == doc['plain_match']['num_blocks'] >= 1 for r in plain)
    assert all(r['network_g']['data_term'] is False for r in runs if r['variant'] == 'no P/Q data term')
    from interir_plugin.tools.options import load_option_file

    ridnet = load_option_file(os.path.join(os.path.dirname(BENCHMARKS), quick['baselines'][0]))['network_g']
    for r in runs:
        assert r['baseline'] == (quick['baselines'][0] if r['variant'] == 'RIDNet' else None)
        if r['baseline']:  # its own network, narrowed by --quick's overrides
            assert r['network_g'] == {**ridnet, **quick['baseline_network_g']['RIDNet']}


#: checks of a script's quick-run JSON document beyond the common ones (script file name -> check)
DOC_CHECKS = {'bench_ablation.py': _check_ablation}


@pytest.mark.parametrize('script', sorted(glob.glob(os.path.join(BENCHMARKS, 'bench_*.py'))), ids=os.path.basename)
def test_benchmark_script_runs_in_quick_mode(script):
    run = subprocess.run([sys.executable, script, '--quick'], capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(BENCHMARKS), env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert run.returncode == 0, run.stderr[-3000:]
    doc, _ = json.JSONDecoder().raw_decode(run.stdout[run.stdout.index('{'):])  # the JSON document, then tables
    assert doc['benchmark'] and doc['torch'] == torch.__version__
    assert '|---|' in run.stdout
    DOC_CHECKS.get(os.path.basename(script), lambda doc: None)(doc)


def test_ablation_variants_are_the_recipe_with_their_network_overrides(tmp_path):
    from interir_plugin.tools.demo import write_option
    from interir_plugin.tools.options import check_option_file, load_option_file

    recipe = load_option_file(os.path.join(os.path.dirname(BENCHMARKS), bench_ablation.RECIPE))
    table = bench_ablation.variants(recipe['network_g'])
    assert list(table)[0] == bench_ablation.BASE and list(table)[-1] == bench_ablation.PLAIN
    names = [n for n in table if n != bench_ablation.PLAIN]
    train_set = {'protocol': 'minicdd_loro', 'protocol_split': 'train'}
    opts = {n: bench_ablation.variant_train_option(recipe, n, {**recipe['network_g'], **table[n]}, 7, seed=11,
                                                   data_root='elsewhere', train_set=train_set) for n in names}
    assert len({o['name'] for o in opts.values()}) == len(names)
    for name, opt in opts.items():
        assert opt['name'] == bench_ablation.experiment_name(name, 11) == f'ablation_{bench_ablation.slug(name)}_s11'
        assert opt['network_g'] == {**recipe['network_g'], **table[name]} and opt['manual_seed'] == 11
        assert opt['train'] == {**recipe['train'], 'time_budget': 7} and opt['val'] is None and opt['num_gpu'] == 0
        # the training renderers of the LORO protocol, with the recipe's other train-set keys and the run's seed
        assert opt['datasets'] == {'train': {**recipe['datasets']['train'], **train_set, 'seed': 11,
                                             'protocol_root': 'elsewhere'}}
        check_option_file(write_option(str(tmp_path / f'{bench_ablation.slug(name)}.yml'), opt, name), True)
    bench_ablation.check_networks({n: {**recipe['network_g'], **table[n]} for n in names})  # every one builds
    plain = bench_ablation.variant_train_option(recipe, bench_ablation.PLAIN, {'type': 'PlainResidualNet'}, 7,
                                                single_output=True)
    weights = recipe['train'].get('stage_weights')
    assert plain['train'] == {**recipe['train'], 'time_budget': 7, 'stage_weights': weights and weights[-1:]}
    assert plain['manual_seed'] == recipe['manual_seed'] and plain['name'] == 'ablation_plain_residual_stack'
    assert recipe == load_option_file(os.path.join(os.path.dirname(BENCHMARKS), bench_ablation.RECIPE))
    assert bench_ablation.select_variants('no_p_q_DATA_term, InterIR-S', table) == ['InterIR-S', 'no P/Q data term']
    with pytest.raises(ValueError, match='unknown variant'):
        bench_ablation.select_variants('no head', table)
    assert bench_ablation.parse_seeds('10, 11,12') == [10, 11, 12]
    for bad in ('', '10,10', '-1', 'ten'):
        with pytest.raises(ValueError, match='--seeds'):
            bench_ablation.parse_seeds(bad)


def test_ablation_baselines_train_from_their_own_files_like_the_variants(tmp_path):
    import yaml

    from interir_plugin.tools.demo import write_option
    from interir_plugin.tools.options import check_option_file, load_option_file

    repo = os.path.dirname(BENCHMARKS)
    files = ['options/train/DGUNet/train_DGUNet-S_MiniCDD.yml', 'options/bench/train_RIDNet_MiniCDD.yml']
    recipe = load_option_file(os.path.join(repo, bench_ablation.RECIPE))
    table = bench_ablation.variants(recipe['network_g'])
    baselines = bench_ablation.load_baselines(','.join(os.path.join(repo, f) for f in files), table)
    assert list(baselines) == ['DGUNet-S', 'RIDNet'] and [b['file'] for b in baselines.values()] == files
    train_set = {'protocol': 'minicdd_loro', 'protocol_split': 'train_heldout_renderers'}
    for name, file in zip(baselines, files):
        own = load_option_file(os.path.join(repo, file))
        opt = bench_ablation.variant_train_option(baselines[name]['options'], name, own['network_g'], 7, seed=11,
                                                  data_root='elsewhere', train_set=train_set)
        # its own network, loss, stage weights, optimiser and schedule; the run's budget, seeds and training set
        assert opt['name'] == f'ablation_{name}_s11' and opt['network_g'] == own['network_g']
        assert opt['train'] == {**own['train'], 'time_budget': 7} and opt['manual_seed'] == 11 and opt['val'] is None
        assert opt['datasets'] == {'train': {**own['datasets']['train'], **train_set, 'seed': 11,
                                             'protocol_root': 'elsewhere'}}
        check_option_file(write_option(str(tmp_path / f'{name}.yml'), opt, name), True)
    assert baselines['DGUNet-S']['options']['train']['stage_weights'] != recipe['train']['stage_weights']
    ridnet = os.path.join(repo, files[1])
    quick = bench_ablation.load_baselines(ridnet, overrides={'RIDNet': {'num_block': 1}})
    assert quick['RIDNet']['options']['network_g']['num_block'] == 1
    assert bench_ablation.baseline_name('x/train_DGUNet_MiniCDD.yml', 'DGUNet') == 'DGUNet'
    assert bench_ablation.baseline_name('mine.yml', 'RIDNet') == 'RIDNet'
    assert bench_ablation.load_baselines(None) == {} == bench_ablation.load_baselines(' , ')
    named_like_the_base = tmp_path / 'train_InterIR-S_mine.yml'
    named_like_the_base.write_text(open(os.path.join(repo, bench_ablation.RECIPE)).read())
    no_protocol = tmp_path / 'train_RIDNet_folders.yml'
    no_protocol.write_text(yaml.safe_dump({**load_option_file(ridnet), 'datasets': {'train': {'dataroot_gt': 'gt'}}}))
    for spec, match in ((f'{ridnet},{ridnet}', "row name 'RIDNet', already taken"),
                        (str(named_like_the_base), "row name 'InterIR-S', already taken"),
                        (str(no_protocol), 'train_RIDNet_folders.yml must be a training option file'),
                        ('nowhere.yml', 'option file not found: nowhere.yml')):
        with pytest.raises(ValueError, match=match):
            bench_ablation.load_baselines(spec, table)
    bad = tmp_path / 'train_RIDNet_bad.yml'  # its constructor refuses it
    bad.write_text(yaml.safe_dump({**load_option_file(ridnet), 'network_g': {'type': 'RIDNet'}}))
    with pytest.raises(ValueError, match=re.escape(f"baseline 'RIDNet' is not a valid network in {bad}")):
        bench_ablation.load_baselines(str(bad))
    record = {'variant': 'RIDNet', 'baseline': 'options/bench/other.yml'}  # resuming: a row is of one option file
    with pytest.raises(ValueError, match="runs of 'RIDNet' from options/bench/other.yml, not from options/bench"):
        bench_ablation.check_baselines([record], baselines, 'runs.jsonl')
    bench_ablation.check_baselines([{**record, 'baseline': files[1]}], baselines, 'runs.jsonl')


def test_ablation_toggles_are_named_after_what_they_do_to_the_recipe():
    table = bench_ablation.variants({'type': 'InterIR', 'freq_branch': False, 'route_by_presence': True})
    assert table['frequency branch'] == {'freq_branch': True} and 'no frequency branch' not in table
    assert table['no presence routing'] == {'route_by_presence': False} and 'presence routing' not in table
    assert table['active-set streaks'] == {'streaks_by_active_set': True}
    assert table['no recogniser'] == {'recognise': False, 'route_by_presence': False}  # routing needs the recogniser
    assert table['residual head'] == {'head': 'residual', 'recognise': False, 'route_by_presence': False,
                                      'streaks_by_active_set': False}
    recipe = {'type': 'InterIR', 'num_feat': 8, 'num_stages': 1, 'num_experts': 2, 'expand': 1, 'recognise': False}
    table = bench_ablation.variants(recipe)
    assert table['recogniser'] == {'recognise': True}
    with pytest.raises(ValueError, match="variant 'presence routing'"):  # routing without the recogniser
        bench_ablation.check_networks({'presence routing': {**recipe, **table['presence routing']}})


def _run_record(variant, seed, psnr, setting=None):
    scores = {'psnr': psnr, 'ssim': 0.5, 'harm': 0.1}
    return {'variant': variant, 'seed': seed, 'setting': setting or {'seconds': 60}, 'iters': 100 + seed, 'gmacs': 1.0,
            'params': 1000,
            'train_seconds': 60.0, 'labels': ['haze'], 'mean': scores, 'per_label': {'haze': scores},
            'input': {'mean': {'psnr': 12.0, 'ssim': 0.4, 'harm': 0.0},
                      'per_label': {'haze': {'psnr': 12.0, 'ssim': 0.4, 'harm': 0.0}}}}


def test_ablation_records_resume_and_report_the_spread(tmp_path):
    import _ablation_report as report

    path = str(tmp_path / report.RECORDS)
    assert report.read_records(path) == []
    runs = [_run_record('InterIR-S', 10, 15.0), _run_record('B', 10, 14.0), _run_record('InterIR-S', 11, 15.2),
            _run_record('B', 11, 14.4), _run_record('C', 10, 15.5)]
    for r in runs:
        report.append_record(path, r)
    assert report.read_records(path) == runs and not os.path.exists(path + '.tmp')
    report.check_setting(runs, {'seconds': 60}, path)
    with pytest.raises(ValueError, match=r'seconds: 60 there, 600 now'):
        report.check_setting(runs, {'seconds': 600}, path)
    summary, rows, lines = report.report(runs, ['InterIR-S', 'B', 'C'], 'InterIR-S')
    base, b, c = summary['InterIR-S'], summary['B'], summary['C']
    assert base['psnr']['mean'] == pytest.approx(15.1) and base['psnr']['sd'] == pytest.approx(0.2 ** 0.5 / 10 ** 0.5)
    assert b['vs_base']['difference'] == pytest.approx(-0.9)
    assert b['vs_base']['spread'] == pytest.approx(base['psnr']['sd'] + b['psnr']['sd'])
    assert b['vs_base']['verdict'] == 'separated' and c['vs_base']['verdict'] == 'fewer than 2 seeds'
    assert c['psnr']['sd'] is None and b['iters']['mean'] == 110.5 and b['seeds'] == [10, 11]
    assert report.difference({'mean': 15.0, 'sd': 0.3}, {'mean': 15.4, 'sd': 0.2})['verdict'] == 'within the spread'
    assert [r['variant'] for r in rows] == ['input (no restoration)', 'InterIR-S', 'B', 'C']
    assert any('| B | 10,11 | 1.000 |' in line and '-0.90' in line and 'separated' in line for line in lines)
    assert lines[0].startswith('Decision rule') and 'PSNR per label (mean over seeds)' in lines
    with open(path, 'a', encoding='utf-8') as f:
        f.write('{"variant": "B", "se')  # a line cut short (never written by append_record) is an error, not a run
    with pytest.raises(ValueError, match=rf'{report.RECORDS}:6: not a JSON line'):
        report.read_records(path)


def test_ablation_plain_stack_has_the_closest_multiply_adds():
    net = {'type': 'InterIR', 'num_feat': 8, 'unshuffle': 2, 'num_stages': 1, 'num_experts': 2, 'expand': 1}
    plain, match = bench_ablation.plain_network(net, (3, 32, 32))
    assert plain == {'type': 'PlainResidualNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'unshuffle': 2,
                     'num_blocks': match['num_blocks']}
    assert match['macs'] == match['base_macs'] + match['num_blocks'] * match['block_macs']  # affine in the blocks
    assert abs(match['macs'] - match['target_macs']) <= match['block_macs'] / 2
    assert match['target_macs'] == model_complexity(InterIR(**{k: v for k, v in net.items() if k != 'type'}),
                                                    (3, 32, 32))['macs']
