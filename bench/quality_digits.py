"""The sample-quality table on the bundled digits: ``python -m bench.quality_digits``.

Every model family is trained class-conditionally on the 17-level digits with its default small
configuration (the one the README and the other digits benchmarks use), then scored against the
test split with the digits feature network ("FID-digits"): test bits/dim where the model has a
likelihood, FID and KID, precision / recall / density / coverage (k = 5), the Inception Score of
the digits classifier, classifier agreement (samples labelled as their class), each the mean and
standard deviation over 3 sample seeds, and the training time on this machine. Two rows frame
them: real data (the training split scored against the test split; the digits network was fitted
and standardised on that split, so this row is a reference point, not a lower bound) and a
baseline (independent per-pixel samples, every sub-pixel drawn from its own categorical fitted to
the training split, class by class).

The report goes to stdout and to bench/results/quality-digits-<device>.txt (markdown) and
bench/results/quality-digits-<device>.csv.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time

import torch

from bench.harness import device_name, device_slug, git_commit
from fastgen.data import ImageDataset, digits
from fastgen.demo import DEMO_MODEL, DEMO_TRAINING
from fastgen.metrics import digits_network
from fastgen.metrics.quality import data_quality, sample_quality
from fastgen.models import DCGAN, VAE, GatedPixelCNN, PixelCNN, PixelCNNpp
from fastgen.train import GANTrainConfig, GANTrainer, TrainConfig, Trainer, model_from_checkpoint

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SEEDS = (0, 1, 2)
SCORES = ("fid", "fid_small", "kid", "precision", "recall", "density", "coverage", "is", "agreement")

# (name, build, trainer config): class-conditional, 17 levels, 8x8.
FAMILIES = {
    "PixelCNN": (lambda: PixelCNN(1, 17, 8, hidden_channels=64, n_layers=6, kernel_size=3, n_classes=10),
                 dict(epochs=20, batch_size=64, lr=1e-3)),
    "GatedPixelCNN (the demo)": (lambda: GatedPixelCNN(**DEMO_MODEL), DEMO_TRAINING),
    "PixelCNNpp": (lambda: PixelCNNpp(1, 17, 8, nr_resnet=1, nr_filters=32, nr_mix=5, n_classes=10),
                   dict(epochs=20, batch_size=64, lr=1e-3, ema_decay=0.99)),
    "VAE (conv, categorical)": (lambda: VAE(1, 17, 8, latent_dim=16, likelihood="categorical", arch="conv",
                                            n_classes=10), dict(epochs=40, batch_size=64, lr=1e-3)),
    "DCGAN (hinge)": (lambda: DCGAN(1, 17, 8, latent_dim=32, width=32, n_classes=10, loss="hinge"),
                      dict(epochs=30)),
}


class IndependentPixels(torch.nn.Module):
    """The baseline: per class, an independent categorical per sub-pixel fitted to the training
    split (counts plus one)."""

    def __init__(self, train: ImageDataset):
        super().__init__()
        self.in_channels, self.image_size, self.levels, self.n_classes = 1, (8, 8), train.levels, 10
        onehot = torch.nn.functional.one_hot(train.images.long(), train.levels).double()
        counts = torch.stack([onehot[train.labels == c].sum(0) for c in range(10)]) + 1.0
        self.register_buffer("probs", counts / counts.sum(-1, keepdim=True))  # (10, 1, 8, 8, levels)

    def sample(self, n, labels, *, generator=None):
        p = self.probs[labels].reshape(-1, self.levels)
        return torch.multinomial(p, 1, generator=generator).reshape(n, 1, 8, 8)


def train_family(name: str, train, val, test, out: str) -> tuple[torch.nn.Module, float, float | None]:
    """(trained model, training seconds, test bits/dim or None)."""
    build, options = FAMILIES[name]
    torch.manual_seed(0)
    model = build()
    start = time.perf_counter()
    if isinstance(model, DCGAN):
        GANTrainer(model, train, out, GANTrainConfig(**options, progress=False, grid_samples=0)).fit()
        return model, time.perf_counter() - start, None
    trainer = Trainer(model, train, val, out, TrainConfig(**options, progress=False, grid_samples=0))
    trainer.fit()
    seconds = time.perf_counter() - start
    trainer.model = model_from_checkpoint(trainer.best_path)
    return trainer.model, seconds, trainer.evaluate(test)


def spread(reports, key: str) -> tuple[float, float] | None:
    values = [r.scores[key] for r in reports if key in r.scores]
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality_digits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="samples per seed (default 10000)")
    parser.add_argument("--only", default=None, help="comma-separated family names to run (default: all)")
    parser.add_argument("--out", default=None, help="report file stem (default bench/results/quality-digits-<device>)")
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    train, val, test = digits("train"), digits("val"), digits("test")
    network = digits_network()
    rows = []

    def add(name, reports, seconds=None, bpd=None, sample_seconds=None, small=None):
        # FID is biased upward at small sample counts: fid_small scores as many samples as the
        # real-data row has images, so that the two can be compared.
        for report, fid_small in zip(reports, small or [r.scores["fid"] for r in reports]):
            report.scores["fid_small"] = fid_small
        row = {"model": name, "bits_per_dim": bpd, "train_s": seconds, "n": reports[0].n_samples,
               "sample_and_score_s": sample_seconds}
        for key in SCORES:
            value = spread(reports, key)
            row[key], row[f"{key}_std"] = value if value else (None, None)
        rows.append(row)
        print(row, flush=True)

    def small_fids(model):
        return [sample_quality(model, test, metrics="fid", n=len(train), seed=100 + s, network=network).scores["fid"]
                for s in SEEDS]

    floor = data_quality(train, test, network=network)
    add("real data: the train split", [floor])
    baseline = IndependentPixels(train)
    add("baseline: independent pixels", [sample_quality(baseline, test, n=args.n, seed=s, network=network)
                                         for s in SEEDS], small=small_fids(baseline))
    wanted = FAMILIES if args.only is None else [n for n in FAMILIES if n.split()[0] in args.only.split(",")]
    with tempfile.TemporaryDirectory() as runs:
        for name in wanted:
            model, seconds, bpd = train_family(name, train, val, test, os.path.join(runs, name.split()[0]))
            start = time.perf_counter()
            reports = [sample_quality(model, test, n=args.n, seed=s, network=network) for s in SEEDS]
            add(name, reports, seconds, bpd, (time.perf_counter() - start) / len(SEEDS), small_fids(model))

    def cell(row, key, digits_=3):
        if row[key] is None:
            return "-"
        text = f"{row[key]:.{digits_}f}"
        return text + (f" ± {row[key + '_std']:.{digits_}f}" if row.get(key + "_std") else "")

    header = [f"# {device_name(device)}, torch {torch.__version__}, commit {git_commit()}",
              f"# command: python -m bench.quality_digits --n {args.n}",
              f"# features: {network.name}; reference: digits/test (360 images); {args.n} samples per seed, "
              f"seeds {SEEDS} (mean ± std over seeds); the real-data row scores the 1257 training images, and the "
              "1257-sample FID column scores each model at that count (FID grows as samples get fewer)", ""]
    table = ["| model | test bits/dim | FID-digits | FID-digits, 1257 samples | KID | precision | recall | density | coverage | IS | "
             "agreement | training (s) | sampling + scoring per seed (s) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        table.append(f"| {row['model']} | {cell(row, 'bits_per_dim')} | {cell(row, 'fid', 2)} | {cell(row, 'fid_small', 2)} | "
                     f"{cell(row, 'kid', 4)} | {cell(row, 'precision')} | {cell(row, 'recall')} | "
                     f"{cell(row, 'density')} | {cell(row, 'coverage')} | {cell(row, 'is', 2)} | "
                     f"{cell(row, 'agreement')} | {cell(row, 'train_s', 0)} | {cell(row, 'sample_and_score_s', 1)} |")
    report = "\n".join(header + table) + "\n"
    print(report)
    stem = args.out or os.path.join(RESULTS_DIR, f"quality-digits-{device_slug(device)}")
    with open(stem + ".txt", "w") as f:
        f.write(report)
    with open(stem + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"written to {stem}.txt and {stem}.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
