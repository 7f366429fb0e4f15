"""``train.time_budget`` and ``val.val_seconds``: a run that lasts a number of seconds, its schedule on the seconds'
clock, validation points every few seconds, and the errors of bad values."""
import csv
import math
import os

import pytest
import torch
from basicsr.models.base_model import BaseModel
from basicsr.models.lr_scheduler import CosineAnnealingRestartLR

from conftest import paired_train_options, write_paired_folders, write_yaml
from interir_plugin.models.time_budget import TimeBudgetMixin, TimeBudgetReached
from interir_plugin.models.unfolding_model import check_options
from interir_plugin.tools.pipelines import run_basicsr

NET = {'type': 'InterIR', 'num_feat': 8, 'unshuffle': 2, 'num_stages': 1, 'num_experts': 1, 'expand': 1,
       'recognise': False}  # unlabelled pairs: no presence labels to learn the gates from


def _budget_options(tmp_path, budget, val_seconds):
    gt, lq = write_paired_folders(str(tmp_path / 'data'), n=2, size=(32, 32))
    opt = paired_train_options('budget', gt, lq, NET, model_type='UnfoldingRestorationModel', total_iter=10 ** 5,
                               save_freq=10 ** 6, val_freq=1, gt_size=16,
                               extra_train={'time_budget': budget, 'warmup_iter': 10 ** 3,
                                            'optim_g': {'type': 'Adam', 'lr': 1e-3},
                                            'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [10 ** 5],
                                                          'restart_weights': [1], 'eta_min': 1e-5}})
    opt['val']['val_seconds'] = val_seconds
    return write_yaml(tmp_path / 'budget.yml', opt)


def test_a_budgeted_run_stops_on_time_with_weights_and_a_learning_curve(tmp_path):
    torch.set_num_threads(1)
    path = _budget_options(tmp_path, budget=3, val_seconds=1)
    spent = run_basicsr('train', path, str(tmp_path))
    assert isinstance(spent, TimeBudgetReached)
    assert 3 <= spent.seconds < 6 and spent.iters > 1
    exp = tmp_path / 'experiments' / 'budget'
    state = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)
    assert 'params' in state
    with open(exp / 'metrics' / 'curve_pairs_val.csv', newline='') as f:
        points = list(csv.DictReader(f))
    seconds = [float(p['train_seconds']) for p in points]
    # a point after the first step, one per second of training, and one when the budget is spent
    assert len(points) >= 4 and seconds == sorted(seconds) and seconds[-1] >= 3
    assert int(points[-1]['iter']) == spent.iters
    assert all(float(p['psnr']) > 0 for p in points)


class _Clocked(TimeBudgetMixin, BaseModel):
    """The budget's clock on BasicSR's BaseModel with one parameter, Adam and a cosine over 1000 iterations."""

    def __init__(self, budget):
        super().__init__({'num_gpu': 0, 'is_train': True, 'dist': False,
                          'train': {'time_budget': budget, 'total_iter': 1000}})
        self.optimizers = [torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)]
        self.schedulers = [CosineAnnealingRestartLR(self.optimizers[0], periods=[1000], eta_min=0.0)]
        self.init_time_budget()

    def lr(self):
        return self.optimizers[0].param_groups[0]['lr']


@pytest.mark.parametrize('seconds, expected', [(0.0, 1e-3), (2.5, 0.5e-3 * (1 + math.cos(math.pi / 4))),
                                               (5.0, 0.5e-3), (9.999, 0.0)])
def test_the_schedule_runs_on_the_seconds_clock(seconds, expected):
    """After t of S seconds the scheduler stands where iteration 1 + total_iter * t / S puts it."""
    model = _Clocked(budget=10)
    model.update_learning_rate(1)  # starts the clock
    model.train_seconds = seconds
    model.update_learning_rate(2)
    assert model.lr() == pytest.approx(expected, abs=2e-6)


def test_warm_up_runs_on_the_seconds_clock():
    model = _Clocked(budget=10)
    model.update_learning_rate(1, warmup_iter=200)
    model.train_seconds = 1.0  # iteration 101 of the schedule's clock: half-way through a 200-iteration warm-up
    model.update_learning_rate(2, warmup_iter=200)
    assert model.lr() == pytest.approx(1e-3 * 101 / 200, rel=1e-2)


@pytest.mark.parametrize('section, key, value, match', [
    ('train', 'time_budget', -1, 'train.time_budget'),
    ('train', 'time_budget', True, 'train.time_budget'),
    ('val', 'val_seconds', 0, 'val.val_seconds'),
    ('val', 'val_seconds', 'ten', 'val.val_seconds'),
])
def test_bad_budget_values_name_the_key(section, key, value, match):
    opt = {'train': {'pixel_opt': {'type': 'L1Loss'}}, 'val': {'val_freq': 1}}
    opt[section][key] = value
    with pytest.raises(ValueError, match=match):
        check_options(opt)


def test_val_seconds_needs_validation_after_every_step():
    opt = {'train': {'pixel_opt': {'type': 'L1Loss'}}, 'val': {'val_freq': 100, 'val_seconds': 5}}
    with pytest.raises(ValueError, match='val_freq: 1'):
        check_options(opt)


def test_without_a_budget_the_run_is_iteration_based(tmp_path):
    path = _budget_options(tmp_path, budget=None, val_seconds=None)
    opt_path = os.path.join(tmp_path, 'short.yml')
    import yaml

    with open(path) as f:
        opt = yaml.safe_load(f)
    opt['train'].update(total_iter=3, warmup_iter=-1)
    opt['val']['val_freq'] = 3
    assert run_basicsr('train', write_yaml(opt_path, opt), str(tmp_path)) is None
    assert (tmp_path / 'experiments' / 'budget' / 'models' / 'net_g_latest.pth').is_file()


def test_ranks_share_the_slowest_clock(monkeypatch):
    """Under DDP every rank takes the largest ``train_seconds`` of all ranks, so schedule, validation points and the
    stop agree (a rank stopping one step early would leave the others waiting in a collective)."""
    model = _Clocked(budget=10)
    model.opt['dist'] = True
    reduced = []

    def all_reduce(tensor, op):  # another rank's clock stands at 7.5 s
        reduced.append(op)
        tensor.fill_(max(tensor.item(), 7.5))

    monkeypatch.setattr(torch.distributed, 'all_reduce', all_reduce)
    model.update_learning_rate(1)  # starts the clock
    model.budget_spent(1)
    assert model.train_seconds == 7.5 and reduced == [torch.distributed.ReduceOp.MAX]
