"""Per-run metrics: one JSON object per line in ``<run>/metrics.jsonl``, and TensorBoard scalars
when the ``tensorboard`` package is installed."""
from __future__ import annotations

import math
import os
import time
from typing import Any

from fastgen.train.checkpoint import dumps_strict


class MetricsLog:
    """Appends records to ``<out_dir>/metrics.jsonl`` (a resumed run appends after the earlier
    lines; records written after the last checkpoint of a crashed run appear again). Every line is
    strict JSON: a value that is not a finite number is written as null, never as NaN or Infinity."""

    def __init__(self, out_dir: str, tensorboard: bool = True):
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, "metrics.jsonl")
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(os.path.join(out_dir, "tensorboard"))
            except ImportError:  # tensorboard is optional
                pass

    def write(self, step: int, **metrics: Any) -> None:
        record = {"time": round(time.time(), 3), "step": step, **metrics}
        with open(self.path, "a") as f:
            f.write(dumps_strict(record) + "\n")
        if self.writer is not None:
            for name, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(name, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
