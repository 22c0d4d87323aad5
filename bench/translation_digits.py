"""pix2pix and CycleGAN on the bundled translation tasks (``fastgen.data.edges_to_digits`` and
``inverted_digits``, 32x32), and the figures their issue asks for, written to
bench/results/translation-digits-<device>.txt with the grids under docs/:

pix2pix (edges -> digits): the mean absolute error of the test translations to the true digits
(on the [0, 1] scale), against an L1-only U-Net of the same size trained on the same batches for
as many steps (the generator alone, L1 loss only, same optimiser and schedule); and the share of
translations that a classifier fitted on the real digits (``fastgen.demo.digit_classifier``, on
the 8x8 digits: translations are average-pooled 4x4 back to 8x8) labels as their source's class.

CycleGAN (inverted digits, unpaired): the same classifier on the translations (A -> B mapped back
by the known inverse map first), the error to the true translation against the error of returning
the input unchanged, and the cycle reconstruction error, each on the test split, both directions.

    python -m bench.translation_digits [--only pix2pix|cyclegan] [--epochs N]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

from bench.harness import device_name, device_slug, git_commit, write_report
from fastgen.data import edges_to_digits, inverted_digits, uninvert_ink
from fastgen.demo import digit_classifier
from fastgen.models import CycleGAN, Pix2Pix
from fastgen.train import TranslationTrainConfig, TranslationTrainer, translation_error

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")
DOCS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs")
PIX2PIX = dict(width=32, dropout=0.5)
PIX2PIX_TRAINING = dict(epochs=40, batch_size=16, lr=2e-4)
CYCLEGAN = dict(width=16, blocks=1, identity_weight=0.0)
CYCLEGAN_TRAINING = dict(epochs=20, batch_size=8, lr=2e-4)


def recognised(classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of 32x32 8-bit digit images that ``classifier`` (fitted on the 8x8 digits, 17
    levels) labels as ``labels``: each image average-pooled 4x4 to 8x8 and scaled to [0, 1]."""
    small = F.avg_pool2d(images.float(), images.shape[-1] // 8) / 255.0
    return float((torch.from_numpy(classifier.predict(small.flatten(1).numpy())) == labels).float().mean())


def mean_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.long() - b.long()).abs().float().mean() / 255.0)


def train(model, data, val, training: dict, out: str, epochs: int | None) -> tuple[TranslationTrainer, float]:
    config = TranslationTrainConfig(**{**training, **({"epochs": epochs} if epochs else {})}, grid_samples=0,
                                    progress=False)
    trainer = TranslationTrainer(model, data, out, config, val_data=val)
    start = time.perf_counter()
    trainer.fit(overwrite=True)
    return trainer, time.perf_counter() - start


def l1_only(model: Pix2Pix, trainer: TranslationTrainer) -> float:
    """Train ``model.generator`` with the L1 loss alone on the batches ``trainer`` used, with its
    optimiser settings and learning-rate schedule; returns the seconds taken."""
    cfg, G = trainer.config, model.generator
    optimizer = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
    model.train()
    start = time.perf_counter()
    step = 0
    for epoch in range(cfg.epochs):
        for k in range(trainer.steps_per_epoch):
            for group in optimizer.param_groups:
                group["lr"] = trainer.learning_rate(step)
            source, target = trainer.reals(trainer.batch_indices(epoch, k))
            loss = F.l1_loss(G(source), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return time.perf_counter() - start


def save_rows(path: str, rows: list[torch.Tensor], n: int = 10) -> str:
    """A PNG with one row per tensor of ``rows`` (the first ``n`` images of each)."""
    from fastgen.train import save_grid

    return save_grid(path, torch.stack([r[k].long() for r in rows for k in range(n)]), 256, n, scale=2)


def pix2pix_report(work: str, figures: str, epochs: int | None) -> list[str]:
    train_data, val, test = edges_to_digits("train"), edges_to_digits("val"), edges_to_digits("test")
    classifier = digit_classifier()
    torch.manual_seed(0)
    model = Pix2Pix(1, 1, 256, 32, **PIX2PIX)
    trainer, seconds = train(model, train_data, val, PIX2PIX_TRAINING, os.path.join(work, "pix2pix"), epochs)
    torch.manual_seed(0)
    baseline = Pix2Pix(1, 1, 256, 32, **PIX2PIX)
    baseline_seconds = l1_only(baseline, trainer)
    out, out_l1 = model.translate(test.source.images), baseline.translate(test.source.images)
    error, error_l1 = translation_error(model, test), translation_error(baseline, test)
    grid = save_rows(os.path.join(figures, "pix2pix-edges-digits.png"),
                     [test.source.images, out, out_l1, test.target.images])
    config = {**PIX2PIX, **PIX2PIX_TRAINING, **({"epochs": epochs} if epochs else {})}
    return [
        f"## pix2pix, edges -> digits (32x32, {len(train_data)} training pairs, {len(test)} test pairs)",
        f"config: {config}; l1_weight 100, PatchGAN {model.discriminator.receptive_field}x"
        f"{model.discriminator.receptive_field}, {sum(p.numel() for p in model.generator.parameters()):,} "
        "generator parameters",
        f"training: {seconds:.0f} s (pix2pix), {baseline_seconds:.0f} s (L1-only U-Net, the same batches)",
        f"test mean absolute error to the true digit ([0, 1] scale): pix2pix {error:.4f}, L1-only {error_l1:.4f} "
        f"(ratio {error / error_l1:.2f}; the goal is at most 0.5)",
        f"classifier recognises the source's class: pix2pix {recognised(classifier, out, test.labels):.1%}, "
        f"L1-only {recognised(classifier, out_l1, test.labels):.1%}, the true digits "
        f"{recognised(classifier, test.target.images, test.labels):.1%}",
        f"grid (rows: edges, pix2pix, L1-only, truth): {os.path.relpath(grid)}",
    ]


def cyclegan_report(work: str, figures: str, epochs: int | None) -> list[str]:
    train_data, val, test = inverted_digits("train"), inverted_digits("val"), inverted_digits("test")
    classifier = digit_classifier()
    torch.manual_seed(0)
    model = CycleGAN(1, 1, 256, 32, **CYCLEGAN)
    _, seconds = train(model, train_data, val, CYCLEGAN_TRAINING, os.path.join(work, "cyclegan"), epochs)
    a, b = test.a.images, test.b.images
    a_to_b, b_to_a = model.translate(a), model.translate(b, "backward")
    cycle_a, cycle_b = model.translate(a_to_b, "backward"), model.translate(b_to_a)
    error_ab, error_ba = mean_error(a_to_b, test.a_in_b.images), mean_error(b_to_a, test.b_in_a.images)
    same_ab, same_ba = mean_error(a, test.a_in_b.images), mean_error(b, test.b_in_a.images)
    labels = torch.cat([test.a.labels, test.b.labels])
    recognised_share = recognised(classifier, torch.cat([uninvert_ink(a_to_b.to(torch.uint8)), b_to_a]), labels)
    grid = save_rows(os.path.join(figures, "cyclegan-inverted-digits.png"),
                     [a, a_to_b, test.a_in_b.images, b, b_to_a, test.b_in_a.images])
    config = {**CYCLEGAN, **CYCLEGAN_TRAINING, **({"epochs": epochs} if epochs else {})}
    return [
        f"## CycleGAN, inverted digits (32x32, unpaired: {len(train_data.a)} A and {len(train_data.b)} B training "
        f"images, {len(a)} + {len(b)} test images)",
        f"config: {config}; cycle {model.cycle_weight:g}, identity {model.identity_weight:g}, pool 50, PatchGAN "
        f"{model.discriminator_a.receptive_field}x"
        f"{model.discriminator_a.receptive_field}",
        f"training: {seconds:.0f} s",
        f"classifier recognises the source's class in {recognised_share:.1%} of the translations (both directions; "
        f"A -> B read back through the known inverse map); the true digits: "
        f"{recognised(classifier, torch.cat([a, test.b_in_a.images]), labels):.1%}",
        f"error to the true translation ([0, 1] scale): A -> B {error_ab:.4f}, B -> A {error_ba:.4f}; returning the "
        f"input unchanged: {same_ab:.4f}, {same_ba:.4f} (ratio {(error_ab + error_ba) / (same_ab + same_ba):.3f}; "
        "the goal is at most 0.5)",
        f"cycle reconstruction error: A -> B -> A {mean_error(cycle_a, a):.4f}, "
        f"B -> A -> B {mean_error(cycle_b, b):.4f}",
        f"grid (rows: A, G(A), truth, B, F(B), truth): {os.path.relpath(grid)}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("pix2pix", "cyclegan"), default=None)
    parser.add_argument("--epochs", type=int, default=None, help="train for this many epochs (a quick check)")
    parser.add_argument("--work", default="runs/bench-translation", help="where the runs write their checkpoints")
    parser.add_argument("--figures", default=DOCS_DIR, help="where the PNGs go (default docs/)")
    parser.add_argument("--out", default=None,
                        help="report file (default bench/results/translation-digits-<device>.txt)")
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    lines = [f"# {device_name(device)}, torch {torch.__version__}, {torch.get_num_threads()} threads, commit "
             f"{git_commit()}",
             f"# command: python -m bench.translation_digits{' --only ' + args.only if args.only else ''}"
             f"{f' --epochs {args.epochs}' if args.epochs else ''}", ""]
    if args.only in (None, "pix2pix"):
        lines += pix2pix_report(args.work, args.figures, args.epochs) + [""]
        print("\n".join(lines), flush=True)
    if args.only in (None, "cyclegan"):
        lines += cyclegan_report(args.work, args.figures, args.epochs)
    suffix = f"-{args.only}" if args.only else ""
    out = args.out or os.path.join(RESULTS_DIR, f"translation-digits{suffix}-{device_slug(device)}.txt")
    write_report(lines, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
