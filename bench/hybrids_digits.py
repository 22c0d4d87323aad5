"""The hybrids' figures on the bundled digits (17 levels, 8x8): ``python -m bench.hybrids_digits``.

PixelVAE, twice: class-conditional (the likelihood figure, compared with the class-conditional
Gated PixelCNN demo) and unconditional with a one-layer decoder and a large free-bits floor (so
that only z can carry the digit, and does).
For each: training time; on the test split the negative ELBO, the KL term and the
importance-weighted estimate of -log p(x) (k = 100); the share of reconstructions (z = posterior
mean, a draw from p(x|z)) that a logistic regression fitted on the real training digits labels as
the digit they reconstruct; cached sampling against one forward pass of the decoder (median of
interleaved repeats) and cached == naive images from the same noise.

Adversarial autoencoder (2-D code, a mixture prior with one component per class tied to the
labels through the discriminator; the decoder does not read the label): training time; an MMD
two-sample test of the encoded test split against prior draws for the same labels; the share of
images decoded from prior draws of component k that the classifier labels k.

Writes the report to bench/results/hybrids-digits-<device>.txt and the figures to docs/.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import torch

from bench.harness import device_name, device_slug, git_commit, write_report
from fastgen.data import digits
from fastgen.demo import digit_classifier, recognised_fraction
from fastgen.metrics import mmd_test
from fastgen.models import AdversarialAutoencoder, PixelVAE
from fastgen.train import TrainConfig, Trainer, model_from_checkpoint, save_grid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "bench", "results")
DOCS_DIR = os.path.join(ROOT, "docs")

# The likelihood figure's model: class-conditional, as the Gated PixelCNN demo it is compared with.
PIXELVAE = dict(in_channels=1, levels=17, image_size=8, latent_dim=16, pixelcnn_layers=6, hidden_channels=96,
                dropout=0.4, free_bits=0.25, n_classes=10)
PIXELVAE_TRAINING = dict(epochs=20, batch_size=32, lr=2e-3, lr_decay=0.93, ema_decay=0.995)
# Unconditional, with a one-layer decoder and 8 latents held at 3 nats each or more, so that the
# digit must go through z: the reconstruction figure's model.
PIXELVAE_UNCONDITIONAL = dict(in_channels=1, levels=17, image_size=8, latent_dim=8, pixelcnn_layers=1,
                              hidden_channels=64, kernel_size=3, free_bits=3.0)
PIXELVAE_UNCONDITIONAL_TRAINING = PIXELVAE_TRAINING | dict(epochs=60)
AAE = dict(in_channels=1, levels=17, image_size=8, latent_dim=2, prior="mixture", n_classes=10,
           likelihood="categorical", hidden=256, channels=32)
AAE_TRAINING = dict(epochs=100, batch_size=64, lr=1e-3)
LN2 = math.log(2.0)


def train(model: torch.nn.Module, training: dict, out: str) -> tuple[Trainer, float]:
    trainer = Trainer(model, digits("train"), digits("val"), out,
                      TrainConfig(**training, grid_samples=0, progress=False))
    start = time.perf_counter()
    with torch.enable_grad():  # the reports measure under no_grad
        trainer.fit(overwrite=True)
    return trainer, time.perf_counter() - start


def once_ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - start)


@torch.no_grad()
def pixelvae_report(name: str, config: dict, training: dict, work: str, figures: str, k: int, repeats: int,
                    epochs: int | None) -> list[str]:
    """Train a PixelVAE of ``config`` and report its figures (see the module docstring)."""
    training = training | ({"epochs": epochs} if epochs else {})
    torch.manual_seed(0)
    trainer, seconds = train(PixelVAE(**config), training, os.path.join(work, name))
    model = model_from_checkpoint(trainer.best_path).eval()  # its EMA weights
    test = digits("test")
    x = test.images.long()
    labels = test.labels if model.n_classes else None
    torch.manual_seed(0)
    nelbo, _, kl = model.nelbo(x, labels, return_parts=True)
    iw = model.log_likelihood(x, labels, k=k, generator=torch.Generator().manual_seed(0))
    classifier = digit_classifier()
    recon = model.reconstruct(x, labels, generator=torch.Generator().manual_seed(1))
    agreement = recognised_fraction(classifier, recon, test.labels)
    real = recognised_fraction(classifier, x, test.labels)

    # Sampling a batch of 100: m(z) once, then the PixelCNN's cached sampler; against one forward
    # pass of the decoder (m(z) and the PixelCNN's logits of a batch of 100 images).
    z = torch.randn(100, model.latent_dim, generator=torch.Generator().manual_seed(2))
    noise = torch.rand(100, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    batch, batch_labels = x[:100], labels[:100] if labels is not None else None
    model.generate(z, batch_labels, noise=noise)  # warm-up
    forward_times, cached_times = [], []
    for _ in range(repeats):  # interleaved
        forward_times.append(once_ms(lambda: model(batch, z, batch_labels)))
        cached_times.append(once_ms(lambda: model.generate(z, batch_labels, noise=noise)))
    forward, cached = statistics.median(forward_times), statistics.median(cached_times)
    exact = torch.equal(model.generate(z, batch_labels, noise=noise),
                        model.generate(z, batch_labels, noise=noise, cache=False))
    rows = torch.arange(10).repeat_interleave(10) if labels is not None else None
    samples = model.sample(100, rows, generator=torch.Generator().manual_seed(4))
    grid = save_grid(os.path.join(figures, f"{name}-digits-samples.png"), samples, 17, 10)
    dims = model.dims
    conditioning = ("class-conditional: the label goes to the encoder, m(z) and the PixelCNN" if labels is not None
                    else "unconditional: only z can carry the digit")
    return [
        f"{name}: PixelVAE {config} ({conditioning})",
        f"  trained {training} on digits/train: {seconds:.0f} s; best validation epoch "
        f"{trainer.history.best_epoch + 1} (EMA weights)",
        f"  test: negative ELBO {nelbo.mean() / (dims * LN2):.4f} bits/dim ({nelbo.mean():.2f} nats), KL "
        f"{kl.mean():.2f} nats per image",
        f"  test: importance-weighted -log p(x), k={k}: {-iw.nats.mean() / (dims * LN2):.4f} bits/dim "
        f"({-iw.nats.mean():.2f} nats)",
        f"  reconstructions (a draw from p(x | z = posterior mean)) labelled as their digit by the classifier: "
        f"{agreement:.1%} (the real test digits: {real:.1%})",
        f"  sampling 100 images: cached {cached:.1f} ms, one decoder forward pass {forward:.1f} ms: "
        f"{cached / forward:.2f}x (median of {repeats} interleaved); cached == naive for the batch: {exact}",
        f"  samples{' (row k: class k)' if labels is not None else ''}: {shown(grid)}",
    ]


def shown(path: str) -> str:
    """A path as the report shows it: relative to the checkout when inside it."""
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def scatter(path: str, codes: torch.Tensor, labels: torch.Tensor, prior: torch.Tensor, size: int = 480) -> str:
    """A PNG of 2-D codes coloured by class over prior draws in grey."""
    from PIL import Image, ImageDraw

    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
               (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
    both = torch.cat([codes, prior])
    low, high = both.min(0).values, both.max(0).values
    scale = (size - 40) / (high - low).max().item()

    def xy(p: torch.Tensor) -> tuple[float, float]:
        return 20 + (p[0].item() - low[0].item()) * scale, size - 20 - (p[1].item() - low[1].item()) * scale

    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    for p in prior:
        x, y = xy(p)
        draw.ellipse((x - 1, y - 1, x + 1, y + 1), fill=(205, 205, 205))
    for p, label in zip(codes, labels.tolist()):
        x, y = xy(p)
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=palette[label % 10])
    for label in range(10):
        draw.text((8 + 14 * label, 4), str(label), fill=palette[label])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path)
    return path


@torch.no_grad()
def aae_report(work: str, figures: str, epochs: int | None) -> list[str]:
    training = AAE_TRAINING | ({"epochs": epochs} if epochs else {})
    torch.manual_seed(0)
    trainer, seconds = train(AdversarialAutoencoder(**AAE), training, os.path.join(work, "aae"))
    model = trainer.model.eval()
    test = digits("test")
    codes = model.encode(test.images.long())[0]
    prior = model.prior_sample(len(test), test.labels, generator=torch.Generator().manual_seed(0))
    result = mmd_test(codes, prior, permutations=1000, generator=torch.Generator().manual_seed(1))
    classifier = digit_classifier()
    labels = torch.arange(10).repeat_interleave(100)
    samples = model.sample(1000, labels, generator=torch.Generator().manual_seed(2))
    recognised = recognised_fraction(classifier, samples, labels)
    rows = model.sample(100, torch.arange(10).repeat_interleave(10), generator=torch.Generator().manual_seed(3))
    grid = save_grid(os.path.join(figures, "aae-digits-samples.png"), rows, 17, 10)
    draws = model.prior_sample(2000, torch.arange(10).repeat(200), generator=torch.Generator().manual_seed(4))
    picture = scatter(os.path.join(figures, "aae-digits-codes.png"), codes, test.labels, draws)
    verdict = "does not reject" if result.p_value > 0.01 else "REJECTS"
    return [
        f"Adversarial autoencoder {AAE} (label-tied mixture prior; the decoder does not read the label)",
        f"  trained {training} on digits/train: {seconds:.0f} s",
        f"  MMD test, encoded test split ({len(test)}) vs prior draws for the same labels: MMD^2 "
        f"{result.statistic:.5f}, bandwidth {result.bandwidth:.3f}, p = {result.p_value:.3f} "
        f"({result.permutations} permutations): {verdict} at the 1% level",
        f"  images decoded from prior draws of component k labelled k by the classifier: {recognised:.1%} (of 1000)",
        f"  samples (row k: component k): {shown(grid)}; codes: {shown(picture)}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=100, help="importance samples (default 100)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timing repeats (default 7)")
    parser.add_argument("--only", choices=("pixelvae", "aae"), default=None)
    parser.add_argument("--work", default="runs/bench-hybrids", help="where the runs write their checkpoints")
    parser.add_argument("--figures", default=DOCS_DIR, help="where the PNGs go (default docs/)")
    parser.add_argument("--epochs", type=int, default=None, help="train both for this many epochs (a quick check)")
    parser.add_argument("--out", default=None, help="report file (default bench/results/hybrids-digits-<device>.txt)")
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    lines = [f"# {device_name(device)}, torch {torch.__version__}, commit {git_commit()}",
             f"# command: python -m bench.hybrids_digits{' --only ' + args.only if args.only else ''}", ""]
    if args.only in (None, "pixelvae"):
        for name, config, training in (("pixelvae", PIXELVAE, PIXELVAE_TRAINING),
                                       ("pixelvae-unconditional", PIXELVAE_UNCONDITIONAL,
                                        PIXELVAE_UNCONDITIONAL_TRAINING)):
            lines += pixelvae_report(name, config, training, args.work, args.figures, args.k, args.repeats,
                                     args.epochs) + [""]
            print("\n".join(lines[-9:]), flush=True)
    if args.only in (None, "aae"):
        lines += aae_report(args.work, args.figures, args.epochs)
    suffix = f"-{args.only}" if args.only else ""
    write_report(lines, args.out or os.path.join(RESULTS_DIR, f"hybrids-digits{suffix}-{device_slug(device)}.txt"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
