"""``fastgen demo``: train a class-conditional Gated PixelCNN on the bundled digits, report test
bits/dim next to an independent per-pixel baseline, and write a 10 x 10 sample grid (one row per
class)."""
from __future__ import annotations

import json
import math
import os
import time

import torch

from fastgen.data import ImageDataset, digits
from fastgen.models import GatedPixelCNN
from fastgen.train import TrainConfig, Trainer, model_from_checkpoint, save_grid

# Sized to train on 2 CPU cores in under three minutes; dropout and the decaying learning rate
# matter because the training split has only 1257 images.
DEMO_MODEL = dict(in_channels=1, levels=17, image_size=8, hidden_channels=96, n_layers=8, kernel_size=5,
                  dropout=0.4, n_classes=10)
DEMO_TRAINING = dict(epochs=20, batch_size=32, lr=2e-3, lr_decay=0.93, grad_clip=1.0)


def pixel_baseline_bpd(train: ImageDataset, test: ImageDataset, alpha: float = 1.0) -> float:
    """Bits/dim on ``test`` of independent per-sub-pixel categoricals fitted to ``train``
    (counts plus ``alpha`` per level): what a model that ignores context can do."""
    counts = torch.nn.functional.one_hot(train.images.long(), train.levels).sum(0).double() + alpha
    log_p = (counts / counts.sum(-1, keepdim=True)).log()
    picked = log_p.expand(len(test), *log_p.shape).gather(-1, test.images.long().unsqueeze(-1))
    return -picked.sum().item() / test.images.numel() / math.log(2.0)


def digit_classifier():
    """A logistic regression fitted on the real training digits (pixels scaled to [0, 1])."""
    from sklearn.linear_model import LogisticRegression

    train = digits("train")
    return LogisticRegression(max_iter=2000).fit(train.images.flatten(1).numpy() / 16.0, train.labels.numpy())


def recognised_fraction(classifier, samples: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of digit ``samples`` that ``classifier`` labels as their conditioning class."""
    predicted = classifier.predict(samples.flatten(1).cpu().numpy() / 16.0)
    return float((predicted == labels.cpu().numpy()).mean())


def is_demo_run(out_dir: str) -> bool:
    """Whether ``out_dir`` holds a run of this demo (its model), which the demo may replace."""
    from fastgen.train.checkpoint import read_config

    for name in ("last", "best"):
        try:
            _, config = read_config(os.path.join(out_dir, name))
        except ValueError:
            continue
        with torch.device("meta"):  # only its config is needed
            demo_config = GatedPixelCNN(**DEMO_MODEL).config()
        return config["model_type"] == "GatedPixelCNN" and config["model_config"] == json.loads(json.dumps(demo_config))
    return False


def run_demo(out_dir: str = "runs/demo", *, epochs: int | None = None, seed: int = 0, progress: bool = True,
             overwrite: bool = False) -> dict:
    """Train, evaluate the best checkpoint on the test split, sample the grid. Returns the figures.
    An earlier demo run in ``out_dir`` is replaced; any other run there is refused (RunDirectoryError)
    unless ``overwrite``."""
    train, val, test = digits("train"), digits("val"), digits("test")
    torch.manual_seed(seed)
    model = GatedPixelCNN(**DEMO_MODEL)
    cfg = TrainConfig(**(DEMO_TRAINING | {"seed": seed, "progress": progress, "grid_samples": 0}
                         | ({"epochs": epochs} if epochs is not None else {})))
    trainer = Trainer(model, train, val, out_dir, cfg)
    start = time.perf_counter()
    trainer.fit(overwrite=overwrite or is_demo_run(out_dir))
    seconds = time.perf_counter() - start
    best = model_from_checkpoint(trainer.best_path)
    trainer.model = best
    test_bpd = trainer.evaluate(test)
    labels = torch.arange(10).repeat_interleave(10)
    samples = best.sample(100, labels, generator=torch.Generator().manual_seed(seed))
    grid = save_grid(os.path.join(out_dir, "samples.png"), samples, best.levels, nrow=10)
    return {"test_bpd": test_bpd, "baseline_bpd": pixel_baseline_bpd(train, test), "train_seconds": seconds,
            "best_epoch": trainer.history.best_epoch + 1, "grid": grid, "samples": samples, "labels": labels,
            "model": best}


def main(out_dir: str = "runs/demo", epochs: int | None = None, seed: int = 0, progress: bool = True,
         overwrite: bool = False) -> int:
    print(f"fastgen demo: class-conditional Gated PixelCNN on the bundled 8x8 digits (17 levels), "
          f"{torch.get_num_threads()} CPU threads")
    result = run_demo(out_dir, epochs=epochs, seed=seed, progress=progress, overwrite=overwrite)
    print(f"trained in {result['train_seconds']:.0f} s; best validation epoch {result['best_epoch']}")
    print(f"test NLL: {result['test_bpd']:.3f} bits/dim "
          f"(independent per-pixel baseline: {result['baseline_bpd']:.3f} bits/dim)")
    print(f"samples (one row per class 0-9): {os.path.abspath(result['grid'])}")
    return 0
