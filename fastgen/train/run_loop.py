"""What every trainer shares: starting a run in its directory without losing another, the epoch
loop of ``fit``, and the check of the weights. ``Trainer``, ``GANTrainer`` and
``TranslationTrainer`` derive from ``RunLoop`` and provide the rest: ``config`` (with ``epochs``
and ``seed``), ``out_dir``, ``model``, the counters ``epoch`` and ``step``, ``history``,
``resume()``, ``_train_epoch()`` and ``_diverged(what, value)`` (the TrainingDiverged to raise,
with the trainer's advice)."""
from __future__ import annotations

import math
import warnings

import torch

from fastgen.train.checkpoint import first_non_finite
from fastgen.train.metrics_log import MetricsLog
from fastgen.train.run_dir import check_run_directory, clear_run, remove_orphans


class RunLoop:
    rank, world = 0, 1  # a trainer under torchrun sets its own

    def _start(self, resume: bool, overwrite: bool) -> None:
        """Check the run directory, tidy it (rank 0), then resume or seed a fresh run."""
        check_run_directory(self.out_dir, resume=resume, overwrite=overwrite)
        if self.rank == 0:
            remove_orphans(self.out_dir)
            if overwrite:
                clear_run(self.out_dir)
        if self.world > 1:
            torch.distributed.barrier()  # no process reads the directory while rank 0 tidies it
        if resume:
            self.resume()
        else:
            torch.manual_seed(self.config.seed)

    def fit(self, *, resume: bool = False, overwrite: bool = False):
        """Train until ``config.epochs`` and return the history. A directory that already holds a
        run needs ``resume`` (continue from ``out_dir/last``) or ``overwrite`` (delete the run's
        checkpoints, metrics and grids first); ``resume`` needs ``out_dir/last``. A trainer that
        has trained already continues in memory. Raises TrainingDiverged when the run diverges."""
        if self.step == 0 or resume or overwrite:
            self._start(resume, overwrite)
        if resume and self.epoch >= self._epochs():
            warnings.warn(f"{self.out_dir}: the run has trained {self.epoch} epochs already (epochs={self._epochs()}); "
                          "nothing to do", stacklevel=2)
        self.log = MetricsLog(self.out_dir) if self.rank == 0 else None
        self.model.train()
        try:
            while self.epoch < self._epochs():
                self._train_epoch()
        finally:
            if self.log:
                self.log.close()
        return self.history

    def _epochs(self) -> int:
        """The epochs of the whole run (the progressive GAN trainer's epochs are its stages)."""
        return self.config.epochs

    def _check_finite(self, what: str, value: float) -> None:
        """Stop the run (TrainingDiverged) when ``value`` (a loss, a gradient norm) is NaN or infinite."""
        if not math.isfinite(value):
            raise self._diverged(what, value)

    def _check_weights(self) -> None:
        """Stop the run (TrainingDiverged) when a weight is NaN or infinite."""
        bad = first_non_finite(dict(self.model.named_parameters()))
        if bad is not None:
            raise self._diverged(f"the weight {bad}", "not finite after the update")
