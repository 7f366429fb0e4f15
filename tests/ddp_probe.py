"""Run `interir train` under torchrun and save every rank's final generator weights to $DDP_PROBE_OUT/rank<R>.pth,
so a test can check that DDP kept the ranks in step. Used by test_distributed.py; not a test module itself."""
import importlib
import os
import sys

import torch

from interir_plugin.cli import main  # imports interir_plugin first: the compat shims precede basicsr

train_module = importlib.import_module('basicsr.train')
captured = {}
_build_model = train_module.build_model


def _capture(opt):
    captured['model'] = _build_model(opt)
    return captured['model']


train_module.build_model = _capture
main(['train', *sys.argv[1:]])
net = captured['model'].get_bare_model(captured['model'].net_g)
torch.save(net.state_dict(), os.path.join(os.environ['DDP_PROBE_OUT'], f"rank{os.environ['RANK']}.pth"))
