"""Run `interir train` under torchrun and save every rank's final generator weights to $DDP_PROBE_OUT/rank<R>.pth,
so a test can check that DDP kept the ranks in step. With $DDP_PROBE_NAN_AT=N, rank 1 alone gets a NaN in the
ground truth of its N-th training batch (every rank must then skip that step together). Used by
test_distributed.py; not a test module itself."""
import importlib
import os
import sys

import torch

from interir_plugin.cli import main  # imports interir_plugin first: the compat shims precede basicsr
from interir_plugin.models.unfolding_model import UnfoldingRestorationModel

train_module = importlib.import_module('basicsr.train')
captured = {}
_build_model = train_module.build_model


def _capture(opt):
    captured['model'] = _build_model(opt)
    return captured['model']


def _poison_rank1(nan_at):
    feed_data, calls = UnfoldingRestorationModel.feed_data, [0]

    def feed(self, data):
        feed_data(self, data)
        calls[0] += 1
        if calls[0] == nan_at:
            self.gt[0, 0, 0, 0] = float('nan')

    UnfoldingRestorationModel.feed_data = feed


train_module.build_model = _capture
if os.environ.get('DDP_PROBE_NAN_AT') and os.environ['RANK'] == '1':
    _poison_rank1(int(os.environ['DDP_PROBE_NAN_AT']))
main(['train', *sys.argv[1:]])
net = captured['model'].get_bare_model(captured['model'].net_g)
torch.save(net.state_dict(), os.path.join(os.environ['DDP_PROBE_OUT'], f"rank{os.environ['RANK']}.pth"))
