"""The progressive GAN and generator-EMA figures on the bundled digits:
``python -m bench.progan_digits [--only progan|dcgan] [--fade-images N] [--stable-images N]``.

ProgressiveGAN: class-conditional, grown 4x4 -> 32x32 on the digits upsampled to 32x32
(``digits("train", size=32)``) with the trainer's defaults (WGAN-GP, drift 0.001, Adam 1e-3 (0,
0.99), generator EMA 0.999); its training time, and the share of 1000 generated digits (100 per
class) that a logistic regression fitted on the real 8x8 training digits
(``fastgen.demo.digit_classifier``; samples average-pooled 4x4 back to 8x8) labels as the class
they were generated for, from the EMA generator and from the trained generator itself. The grid
of each stage is copied to docs/progan-digits-stage-N.png.

DCGAN: the same agreement with and without the generator EMA, for class-conditional DCGANs
(hinge) trained a few epochs on the 8x8 digits with three seeds.

The report goes to bench/results/progan-digits-<device>.txt.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import torch
import torch.nn.functional as F

from bench.harness import device_name, device_slug, git_commit, write_report
from fastgen.data import digits
from fastgen.demo import digit_classifier
from fastgen.models import DCGAN, ProgressiveGAN
from fastgen.train import GANTrainConfig, GANTrainer, ProgressiveTrainConfig, ProgressiveTrainer

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DOCS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
PROGAN = dict(latent_dim=64, max_channels=64)
PROGAN_TRAINING = dict(fade_images=12_000, stable_images=12_000, stage_batch_sizes=(64, 64, 32, 32), batch_size=32)
DCGAN_MODEL = dict(latent_dim=32, width=32, loss="hinge")
DCGAN_EPOCHS = 10


def agreement(classifier, images: torch.Tensor, labels: torch.Tensor, levels: int) -> float:
    """The share of digit images (any size that pools to 8x8) that ``classifier`` labels as ``labels``."""
    small = F.avg_pool2d(images.float(), images.shape[-1] // 8) / (levels - 1)
    return float((torch.from_numpy(classifier.predict(small.flatten(1).numpy())) == labels).float().mean())


def ema_and_raw(trainer, classifier, n_per_class: int = 100) -> tuple[float, float]:
    """Agreement of samples from the generator's moving average and from the generator itself, from
    the same latents."""
    model = trainer.model
    labels = torch.arange(10).repeat_interleave(n_per_class)
    z = model.noise(len(labels), torch.Generator().manual_seed(1))
    raw = agreement(classifier, model.images_from(z, labels), labels, model.levels)
    with trainer.averaged():
        averaged = agreement(classifier, model.images_from(z, labels), labels, model.levels)
    return averaged, raw


def progan_rows(work: str, classifier, training: dict) -> list[str]:
    train = digits("train", size=32)
    torch.manual_seed(0)
    model = ProgressiveGAN(1, train.levels, 32, n_classes=10, **PROGAN)
    config = ProgressiveTrainConfig(**training, progress=True, grid_samples=8)
    trainer = ProgressiveTrainer(model, train, work, config)
    start = time.perf_counter()
    trainer.fit(overwrite=True)
    seconds = time.perf_counter() - start
    averaged, raw = ema_and_raw(trainer, classifier)
    grids = []
    for name in sorted(os.listdir(os.path.join(work, "samples"))):
        stage = name.split("_")[1]
        target = os.path.join(DOCS_DIR, f"progan-digits-stage-{stage}.png")
        shutil.copyfile(os.path.join(work, "samples", name), target)
        grids.append(os.path.relpath(target, os.path.dirname(DOCS_DIR)))
    params = sum(p.numel() for p in model.parameters())
    return [f"class-conditional ProgressiveGAN {PROGAN} ({params:,} parameters), grown 4x4 -> 32x32 on "
            f"{train.name}, schedule {training}: {seconds:.0f} s of training ({trainer.step} steps)",
            f"  1000 generated digits labelled as their class: EMA generator {averaged:.1%}, "
            f"trained generator {raw:.1%}",
            f"  grids (EMA generator, one per stage): {', '.join(grids)}"]


def dcgan_rows(work: str, classifier, epochs: int) -> list[str]:
    train = digits("train")
    lines = [f"class-conditional DCGAN {DCGAN_MODEL} on {train.name}, {epochs} epochs, generator EMA 0.99:"]
    pairs = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        model = DCGAN(1, train.levels, 8, n_classes=10, **DCGAN_MODEL)
        trainer = GANTrainer(model, train, os.path.join(work, f"dcgan-{seed}"),
                             GANTrainConfig(epochs=epochs, seed=seed, ema_decay=0.99, progress=False, grid_samples=0))
        trainer.fit(overwrite=True)
        pairs.append(ema_and_raw(trainer, classifier))
        lines.append(f"  seed {seed}: EMA generator {pairs[-1][0]:.1%}, trained generator {pairs[-1][1]:.1%}")
    mean = [sum(p[k] for p in pairs) / len(pairs) for k in (0, 1)]
    lines.append(f"  mean: EMA generator {mean[0]:.1%}, trained generator {mean[1]:.1%}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("progan", "dcgan"), default=None)
    parser.add_argument("--fade-images", type=int, default=PROGAN_TRAINING["fade_images"])
    parser.add_argument("--stable-images", type=int, default=PROGAN_TRAINING["stable_images"])
    parser.add_argument("--dcgan-epochs", type=int, default=DCGAN_EPOCHS)
    parser.add_argument("--work", default="runs/bench-progan", help="where the runs write their checkpoints and grids")
    parser.add_argument("--out", default=None, help="report file (default bench/results/progan-digits-<device>.txt)")
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    training = {**PROGAN_TRAINING, "fade_images": args.fade_images, "stable_images": args.stable_images}
    command = "python -m bench.progan_digits" + (f" --only {args.only}" if args.only else "")
    lines = [f"# {device_name(device)}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"commit {git_commit()}", f"# command: {command}", ""]
    classifier = digit_classifier()
    test = digits("test")
    lines.append(f"the classifier on the real test digits: {agreement(classifier, test.images, test.labels, 17):.1%}")
    if args.only in (None, "progan"):
        lines += progan_rows(os.path.join(args.work, "progan"), classifier, training)
    if args.only in (None, "dcgan"):
        lines += dcgan_rows(args.work, classifier, args.dcgan_epochs)
    write_report(lines, args.out or os.path.join(RESULTS_DIR, f"progan-digits-{device_slug(device)}.txt"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
