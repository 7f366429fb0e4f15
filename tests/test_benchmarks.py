"""Every benchmark script runs (its ``--quick`` mode), the multiply-add ceiling of benchmarks/bench_interir.py
replays exactly the work mmengine counts, and the ablation's variants are the recipe with their overrides."""
import glob
import json
import os
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
    """The quick ablation trained and scored every quick variant on the quick labels, in its own experiment."""
    quick = bench_ablation.QUICK
    assert list(doc['variants']) == list(quick['variants']) and doc['seconds'] == quick['seconds']
    assert len({v['experiment'] for v in doc['variants'].values()}) == len(doc['variants'])
    for v in doc['variants'].values():
        assert v['iters'] >= 1 and v['train_seconds'] >= quick['seconds'] and v['gmacs'] > 0
        assert list(v['per_label']) == list(quick['labels']) == doc['labels'] and set(v['mean']) == {'psnr', 'ssim'}
    assert list(doc['input']['per_label']) == list(quick['labels'])
    assert doc['variants'][bench_ablation.PLAIN]['network_g']['num_blocks'] == doc['plain_match']['num_blocks'] >= 1
    assert doc['variants']['no P/Q data term']['network_g']['data_term'] is False


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
    names = [n for n in bench_ablation.VARIANTS if n != bench_ablation.PLAIN]
    opts = {n: bench_ablation.variant_train_option(recipe, n, {**recipe['network_g'], **bench_ablation.VARIANTS[n]},
                                                   7, data_root='elsewhere') for n in names}
    assert len({o['name'] for o in opts.values()}) == len(names)
    for name, opt in opts.items():
        assert opt['network_g'] == {**recipe['network_g'], **bench_ablation.VARIANTS[name]}
        assert opt['train'] == {**recipe['train'], 'time_budget': 7} and opt['val'] is None and opt['num_gpu'] == 0
        assert list(opt['datasets']) == ['train'] and opt['datasets']['train']['protocol_root'] == 'elsewhere'
        check_option_file(write_option(str(tmp_path / f'{bench_ablation.slug(name)}.yml'), opt, name), True)
    plain = bench_ablation.variant_train_option(recipe, bench_ablation.PLAIN, {'type': 'PlainResidualNet'}, 7,
                                                single_output=True)
    weights = recipe['train'].get('stage_weights')
    assert plain['train'] == {**recipe['train'], 'time_budget': 7, 'stage_weights': weights and weights[-1:]}
    assert recipe == load_option_file(os.path.join(os.path.dirname(BENCHMARKS), bench_ablation.RECIPE))
    assert bench_ablation.select_variants('no_p_q_DATA_term, InterIR-S') == ['InterIR-S', 'no P/Q data term']
    with pytest.raises(ValueError, match='unknown variant'):
        bench_ablation.select_variants('no head')


def test_ablation_plain_stack_has_the_closest_multiply_adds():
    net = {'type': 'InterIR', 'num_feat': 8, 'unshuffle': 2, 'num_stages': 1, 'num_experts': 2, 'expand': 1}
    plain, match = bench_ablation.plain_network(net, (3, 32, 32))
    assert plain == {'type': 'PlainResidualNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'unshuffle': 2,
                     'num_blocks': match['num_blocks']}
    assert match['macs'] == match['base_macs'] + match['num_blocks'] * match['block_macs']  # affine in the blocks
    assert abs(match['macs'] - match['target_macs']) <= match['block_macs'] / 2
    assert match['target_macs'] == model_complexity(InterIR(**{k: v for k, v in net.items() if k != 'type'}),
                                                    (3, 32, 32))['macs']
