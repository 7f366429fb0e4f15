"""Training for a wall-clock budget instead of a number of iterations, with validation points every few seconds.

``train.time_budget: S`` makes a run last ``S`` seconds of training (data loading and steps; validation is not
counted; under DDP every rank follows the slowest rank's clock). The schedules keep their shape and are spread over
the budget: after ``t`` seconds the scheduler and the warm-up are where iteration ``1 + total_iter * t / S`` would put
them, so ``total_iter`` is the length of the schedule's clock, not a count of steps. When the budget is spent the
model validates once more (if ``val.val_seconds`` is set; BasicSR offers a validation right after the step), saves
``net_g_latest.pth`` and raises :class:`TimeBudgetReached`, which ends BasicSR's training loop;
:func:`interir_plugin.tools.pipelines.run_basicsr` catches it and returns its figures.

``val.val_seconds: V`` (needs ``val_freq: 1``, so BasicSR offers a validation after every step) validates at 0,
V, 2V, ... seconds of training and appends every point to ``<path.log>/metrics/curve_<dataset>.csv`` (iteration,
training seconds, each metric's mean over labels): PSNR against training seconds.
"""
import csv
import os
import os.path as osp
import time

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only


class TimeBudgetReached(Exception):
    """``train.time_budget`` is spent; the weights are saved as ``net_g_latest.pth``.

    Attributes:
        iters (int): Iterations reached.
        seconds (float): Training seconds spent (validation excluded).
    """

    def __init__(self, iters, seconds):
        super().__init__(f'time budget reached after {iters} iterations ({seconds:.1f} s of training)')
        self.iters, self.seconds = iters, seconds


def check_budget_options(opt):
    """Validate ``train.time_budget`` and ``val.val_seconds``; raise ``ValueError`` naming the key."""
    for section, key in (('train', 'time_budget'), ('val', 'val_seconds')):
        value = (opt.get(section) or {}).get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise ValueError(f'option {section}.{key} must be null or a positive number of seconds, got {value!r}')
    val = opt.get('val') or {}
    if val.get('val_seconds') is not None and val.get('val_freq') != 1:
        raise ValueError(f'option val.val_seconds needs val.val_freq: 1 (validation is offered after every step and '
                         f'taken every val_seconds of training), got val_freq {val.get("val_freq")!r}')


class TimeBudgetMixin:
    """The clock of :mod:`interir_plugin.models.time_budget` for a BasicSR model (see the module docstring)."""

    def init_time_budget(self):
        self.time_budget = self.opt['train'].get('time_budget')
        self.val_seconds = (self.opt.get('val') or {}).get('val_seconds')
        self.train_seconds = 0.0
        self._clock = None  # perf_counter at the end of the last counted interval
        self._schedule_iter = 1  # the schedule's clock: BasicSR's iteration the schedulers stand at
        self._next_validation = 0.0
        self._stop_pending = False

    def _tick(self):
        """Once per iteration, after the step: add the time since the last tick (data loading and the step) to
        :attr:`train_seconds`. Under DDP the ranks then agree on the slowest rank's clock, so the schedule, the
        validation points and the stop are the same on every rank."""
        now = time.perf_counter()
        self.train_seconds += now - self._clock
        self._clock = now
        if self.opt.get('dist', False):
            clock = torch.tensor([self.train_seconds], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(clock, op=torch.distributed.ReduceOp.MAX)
            self.train_seconds = clock.item()

    def update_learning_rate(self, current_iter, warmup_iter=-1):
        """BasicSR's per-iteration update, or with ``train.time_budget`` the same schedule on the seconds' clock."""
        if self._stop_pending:  # no validation came after the last step: end here
            self._finish(current_iter - 1)
        if self._clock is None:  # the first iteration starts the clock
            self._clock = time.perf_counter()
        if self.time_budget is None:
            return super().update_learning_rate(current_iter, warmup_iter)
        total = self.opt['train']['total_iter']
        target = 1 + min(total - 1, int(total * self.train_seconds / self.time_budget))
        while self._schedule_iter < target:
            for scheduler in self.schedulers:
                scheduler.step()
            self._schedule_iter += 1
        if self._schedule_iter < warmup_iter:
            self._set_lr([[lr * self._schedule_iter / warmup_iter for lr in group] for group in self._get_init_lr()])

    def budget_spent(self, current_iter):
        """After a step: if the budget is spent, end the run (:meth:`_finish`), after the last validation point when
        ``val.val_seconds`` is set (BasicSR offers it right after this step)."""
        if self.time_budget is None and self.val_seconds is None:  # an iteration-based run keeps no clock
            return
        self._tick()
        if self.time_budget is None or self.train_seconds < self.time_budget:
            return
        if self.val_seconds is None:
            self._finish(current_iter)
        self._stop_pending = True

    def _finish(self, current_iter):
        """Save ``net_g_latest.pth`` (and EMA) and raise :class:`TimeBudgetReached`."""
        if hasattr(self, 'net_g_ema'):
            self.save_network([self.net_g, self.net_g_ema], 'net_g', -1, param_key=['params', 'params_ema'])
        else:
            self.save_network(self.net_g, 'net_g', -1)
        get_root_logger().info(f'Time budget of {self.time_budget} s reached at iter {current_iter}; '
                               'weights saved as net_g_latest.pth.')
        raise TimeBudgetReached(current_iter, self.train_seconds)

    def validation(self, dataloader, current_iter, tb_logger, save_img=False):
        """BasicSR's validation, or with ``val.val_seconds`` a validation point every ``val_seconds`` of training
        (and one when the budget is spent)."""
        if getattr(self, 'val_seconds', None) is None:
            return super().validation(dataloader, current_iter, tb_logger, save_img)
        if self.train_seconds >= self._next_validation or self._stop_pending:
            self._validate_point(dataloader, current_iter, tb_logger, save_img)
            while self._next_validation <= self.train_seconds:
                self._next_validation += self.val_seconds
        if self._stop_pending:
            self._finish(current_iter)

    def _validate_point(self, dataloader, current_iter, tb_logger, save_img):
        super().validation(dataloader, current_iter, tb_logger, save_img)
        self._append_curve(dataloader.dataset.opt['name'], current_iter)
        self._clock = time.perf_counter()  # validation is not training time

    @master_only
    def _append_curve(self, dataset_name, current_iter):
        folder = self.opt['path'].get('log')
        if folder is None:
            return
        path = osp.join(folder, 'metrics', f'curve_{dataset_name}.csv'.replace(osp.sep, '_'))
        os.makedirs(osp.dirname(path), exist_ok=True)
        new = not osp.exists(path)
        metrics = list(self.metric_results)
        with open(path, 'a', newline='', encoding='utf-8') as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(['iter', 'train_seconds', *metrics])
            writer.writerow([current_iter, f'{self.train_seconds:.2f}', *(f'{self.metric_results[m]:.4f}'
                                                                          for m in metrics)])
        self.curve_csv_path = path
