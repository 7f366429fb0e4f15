"""Run `interir train` under torchrun and save every rank's final generator weights to $DDP_PROBE_OUT/rank<R>.pth,
so a test can check that DDP kept the ranks in step. Used by test_distributed.py; not a test module itself."""
import os
import sys

import basicsr.train
import torch

import interir_plugin  # noqa: F401
from interir_plugin.cli import main

captured = {}
_build_model = basicsr.train.build_model


def _capture(opt):
    captured['model'] = _build_model(opt)
    return captured['model']


basicsr.train.build_model = _capture
main(['train', *sys.argv[1:]])
net = captured['model'].get_bare_model(captured['model'].net_g)
torch.save(net.state_dict(), os.path.join(os.environ['DDP_PROBE_OUT'], f"rank{os.environ['RANK']}.pth"))
