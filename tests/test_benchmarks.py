"""Every benchmark script runs (its ``--quick`` mode), and the multiply-add ceiling of benchmarks/bench_interir.py
replays exactly the work mmengine counts."""
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
    assert pooling > 0
    assert counted_macs(counted) + pooling == model_complexity(net, (3, 32, 48))['macs']
    with torch.inference_mode():
        replay(both)  # the recorded calls run again on their own copies of the inputs


@pytest.mark.parametrize('script', sorted(glob.glob(os.path.join(BENCHMARKS, 'bench_*.py'))), ids=os.path.basename)
def test_benchmark_script_runs_in_quick_mode(script):
    run = subprocess.run([sys.executable, script, '--quick'], capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(BENCHMARKS), env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert run.returncode == 0, run.stderr[-3000:]
    doc, _ = json.JSONDecoder().raw_decode(run.stdout[run.stdout.index('{'):])  # the JSON document, then tables
    assert doc['benchmark'] and doc['torch'] == torch.__version__
    assert '|---|' in run.stdout
