"""The VAE and GAN figures on the bundled digits: ``python -m bench.vae_gan_digits``.

VAE: for a few likelihoods, the test split's negative ELBO and the importance-weighted estimate of
-log p(x) (k = 100) in nats per image and bits/dim, before training and after each stage of it.

GAN: a class-conditional DCGAN (hinge loss) trained for 30 epochs, its training time, and the share
of 1000 generated digits (100 per class) that a logistic regression fitted on the real training
digits assigns to the class they were generated for.

The report goes to stdout and to bench/results/vae-gan-digits-<device>.txt.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

import torch

from bench.harness import device_name, device_slug, git_commit, write_report
from fastgen.data import digits
from fastgen.models import DCGAN, VAE
from fastgen.train import GANTrainConfig, GANTrainer, TrainConfig, Trainer

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# (likelihood, binarized data): discrete likelihoods only, so that both numbers bound -log P(x).
VAES = [("categorical", False), ("logistic", False), ("bernoulli", True)]
STAGES = (0, 2, 10, 40)  # epochs trained when the test split is measured


@torch.no_grad()
def _measure(model: VAE, test, k: int) -> tuple[float, float]:
    """(negative ELBO, importance-weighted -log p(x)) in nats per image, means over ``test``."""
    model.eval()
    x, labels = test.images.long(), test.labels
    g = torch.Generator().manual_seed(0)
    nelbo = model.nelbo(x, labels, generator=g).mean().item()
    nll = -model.log_likelihood(x, labels, k=k, chunk=4096, generator=g).nats.mean().item()
    model.train()
    return nelbo, nll


def vae_rows(out_dir: str, k: int) -> list[str]:
    lines = [f"| likelihood | trained on | epochs | -ELBO (nats) | -ELBO (bits/dim) | IW k={k} (nats) | IW (bits/dim) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for likelihood, binarized in VAES:
        train, val, test = (digits(s, binarized=binarized) for s in ("train", "val", "test"))
        torch.manual_seed(0)
        model = VAE(1, train.levels, 8, latent_dim=16, likelihood=likelihood, arch="conv", n_classes=10)
        dims_ln2 = 64 * math.log(2.0)
        done = 0
        for stage in STAGES:
            if stage > done:
                config = TrainConfig(epochs=stage, batch_size=64, lr=1e-3, progress=False, grid_samples=0)
                trainer = Trainer(model, train, val, os.path.join(out_dir, likelihood), config)
                trainer.fit(resume=True)
                done = stage
            nelbo, nll = _measure(model, test, k)
            lines.append(f"| {likelihood} | {train.name} | {stage} | {nelbo:.2f} | {nelbo / dims_ln2:.4f} | "
                         f"{nll:.2f} | {nll / dims_ln2:.4f} |")
            print(lines[-1], flush=True)
    return lines


def gan_rows(out_dir: str, epochs: int) -> list[str]:
    from sklearn.linear_model import LogisticRegression

    train = digits("train")
    torch.manual_seed(0)
    model = DCGAN(1, 17, 8, latent_dim=32, width=32, n_classes=10, loss="hinge")
    start = time.perf_counter()
    GANTrainer(model, train, out_dir, GANTrainConfig(epochs=epochs, progress=False, grid_samples=10)).fit()
    seconds = time.perf_counter() - start
    classifier = LogisticRegression(max_iter=2000).fit(train.images.flatten(1).numpy() / 16, train.labels.numpy())
    test = digits("test")
    real = (classifier.predict(test.images.flatten(1).numpy() / 16) == test.labels.numpy()).mean()
    labels = torch.arange(10).repeat_interleave(100)
    images = model.sample(1000, labels, generator=torch.Generator().manual_seed(1))
    generated = (classifier.predict(images.flatten(1).numpy() / 16) == labels.numpy()).mean()
    return [f"class-conditional DCGAN (hinge), {epochs} epochs on digits/train: {seconds:.1f} s of training",
            f"  generated digits labelled as their class by a logistic regression: {generated:.1%} (of 1000)",
            f"  the same classifier on the real test digits: {real:.1%}",
            f"  grids: {os.path.join(out_dir, 'samples')}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=100, help="importance samples (default 100)")
    parser.add_argument("--gan-epochs", type=int, default=30)
    parser.add_argument("--work", default="runs/bench-vae-gan", help="where the GAN run writes its grids")
    parser.add_argument("--out", default=None, help="report file (default bench/results/vae-gan-digits-<device>.txt)")
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    header = [f"# {device_name(device)}, torch {torch.__version__}, commit {git_commit()}",
              "# command: python -m bench.vae_gan_digits", ""]
    lines = header + ["VAE (conv, 16 latents, class-conditional) on the digits' test split; -ELBO >= IW estimate "
                      ">= -log p(x):", ""]
    with tempfile.TemporaryDirectory() as runs:  # the staged VAE runs resume from their own checkpoints only
        lines += vae_rows(runs, args.k) + [""]
    lines += gan_rows(args.work, args.gan_epochs)
    write_report(lines, args.out or os.path.join(RESULTS_DIR, f"vae-gan-digits-{device_slug(device)}.txt"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
