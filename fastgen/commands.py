"""The ``fastgen train``, ``fastgen sample`` and ``fastgen eval`` commands (parsed in fastgen/cli.py).

``train`` covers every model: PixelCNN, Gated PixelCNN, PixelCNN++, the VAE, PixelVAE and the adversarial
autoencoder with the likelihood trainer (``fastgen.train.Trainer``), DCGAN and the MLP GAN with
``fastgen.train.GANTrainer``, the progressive GAN with ``fastgen.train.ProgressiveTrainer``, pix2pix
and CycleGAN with ``fastgen.train.TranslationTrainer`` (fastgen/translation_commands.py, which also
holds ``translate``).

Every option is checked when it is parsed (``argparse`` types below), and everything else that a
user can get wrong (paths, data, checkpoints, the run directory) raises a ValueError or an OSError
before any work starts; ``fastgen.cli.main`` prints those as one line."""
from __future__ import annotations

import argparse
import math
import os
from typing import Callable

import numpy as np
import torch

from fastgen.train._validate import MAX_COUNT, MAX_EPOCHS, MAX_SEED, check_float, check_int
from fastgen.translation_commands import TRANSLATORS

MODELS = ("pixelcnn", "gated-pixelcnn", "pixelcnnpp", "vae", "pixelvae", "aae", "dcgan", "mlp-gan", "progan",
          *TRANSLATORS)
GANS = ("dcgan", "mlp-gan", "progan")
MAX_SAMPLES = 10_000  # images in one `fastgen sample` grid
MAX_IW_SAMPLES = 100_000  # `fastgen eval --k`
MAX_QUALITY_SAMPLES = 1_000_000  # `fastgen eval --n`


# -- option types: each refuses a bad value with argparse's "argument --x: ..." line ------------------------
def int_option(low: int = 1, high: int = MAX_COUNT) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        try:
            check_int("the value", value, low, high)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).replace("the value must be", "must be")) from None
        return value

    return parse


def float_option(low: float, high: float = math.inf, *, low_open: bool = False,
                 high_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in the interval (NaN and infinities are refused)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        try:
            check_float("the value", value, low, high, low_open=low_open, high_open=high_open)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).replace("the value must be", "must be")) from None
        return value

    return parse


def int_list_option(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated positive integers."""
    parse = int_option(1)
    values = tuple(parse(part.strip()) for part in text.split(","))
    return values


def path_option(text: str) -> str:
    """An argparse type: a non-empty path."""
    if not text or "\0" in text:
        raise argparse.ArgumentTypeError(f"expected a path, got {text!r}")
    return text


SEED = int_option(0, MAX_SEED)
# A train switch has a --no- form, so that the command line can turn off what a --config file turned on.
SWITCH = argparse.BooleanOptionalAction


def metrics_option(text: str) -> str:
    """An argparse type: a comma-separated subset of the sample-quality metrics."""
    from fastgen.metrics.quality import check_metrics

    try:
        return ",".join(check_metrics(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).replace("metrics must be", "must be")) from None


def image_data(data, spec: str):
    """``data`` when it is a set of images; the pairs and domains of the image-to-image models are refused."""
    from fastgen.data import ImageDataset, PairedDataset

    if not isinstance(data, ImageDataset):
        held = "image pairs" if isinstance(data, PairedDataset) else "two domains of images"
        raise ValueError(f"--data {spec} holds {held}, for pix2pix or cyclegan; this model takes a set of images")
    return data


def refuse_translator(model: torch.nn.Module, command: str) -> None:
    """A pix2pix or CycleGAN run maps images to images: it has nothing to sample or evaluate here."""
    from fastgen.models import ImageTranslator

    if isinstance(model, ImageTranslator):
        raise ValueError(f"{command}: the checkpoint holds a {type(model).__name__}, which translates images; use "
                         "`fastgen translate RUN --input DIR -o DIR`")


# -- train ---------------------------------------------------------------------------------------------
def _datasets(spec: str, levels: int | None, val_fraction: float, seed: int, image_size: int | None = None):
    """(train, validation) for a data spec: the digits' own validation split, otherwise a seeded
    ``val_fraction`` of the training files; with ``image_size``, resized to that square size (the
    bundled digits by ``digits(size=)``, others by ``ImageDataset.resize``)."""
    from fastgen.data import digits, load

    def loaded(split: str):
        if image_size is not None and spec.startswith("digits"):
            return digits(split, binarized=spec == "digits-binary", size=image_size)
        data = image_data(load(spec, split), spec)
        return data.resize(image_size) if image_size is not None else data

    train = loaded("train")
    if spec.startswith("digits"):
        val = loaded("val")
    elif val_fraction > 0:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        cut = max(1, int(len(train) * val_fraction))
        if cut >= len(train):
            raise ValueError(f"--val-fraction {val_fraction} leaves no training images of the {len(train)} in "
                             f"{train.name} (use --val-fraction 0 to train on all of them)")
        train, val = train.subset(order[cut:], train.name), train.subset(order[:cut], f"{train.name} (validation)")
    else:
        val = None
    if levels is not None and levels != train.levels:
        if levels > train.levels:
            raise ValueError(f"--levels {levels}: {train.name} has {train.levels} levels, and --levels can only "
                             f"reduce them (2 to {train.levels})")
        train, val = train.quantize(levels), val.quantize(levels) if val is not None else None
    return train, val


def build_model(name: str, train, args: argparse.Namespace) -> torch.nn.Module:
    from fastgen.models import (DCGAN, MLPGAN, VAE, AdversarialAutoencoder, GatedPixelCNN, PixelCNN, PixelCNNpp,
                                PixelVAE)

    channels, height, width = train.shape
    if args.conditional and train.labels is None:
        raise ValueError(f"--conditional needs labels, and {train.name} has none")
    n_classes = train.n_classes if args.conditional else None
    if name == "vae":
        return VAE(channels, train.levels, (height, width), latent_dim=args.latent_dim, likelihood=args.likelihood,
                   arch=args.arch, hidden=args.hidden * 4, channels=max(1, args.hidden // 2), n_classes=n_classes,
                   beta=args.beta)
    if name == "pixelvae":
        return PixelVAE(channels, train.levels, (height, width), latent_dim=args.latent_dim,
                        pixelcnn_layers=args.layers, hidden_channels=args.hidden, kernel_size=args.kernel_size or 5,
                        dropout=args.dropout, n_classes=n_classes, beta=args.beta, free_bits=args.free_bits)
    if name == "aae":
        if args.supervised and not args.conditional:
            raise ValueError("--supervised gives the decoder the labels: add --conditional")
        if args.conditional and not args.supervised and args.prior == "gaussian":
            raise ValueError("aae --conditional ties each class to a region of the prior: use --prior mixture or "
                             "swiss_roll, or add --supervised (the decoder reads the label)")
        if args.prior == "swiss_roll" and args.latent_dim != 2:
            raise ValueError(f"--prior swiss_roll is 2-D: use --latent-dim 2 (got {args.latent_dim})")
        if args.prior == "mixture" and args.latent_dim < 2:
            raise ValueError("--prior mixture lies in at least 2 dimensions: use --latent-dim 2 or more")
        if args.loss == "wasserstein":
            raise ValueError("aae --loss wasserstein: the code discriminator has no Lipschitz constraint; use "
                             "non_saturating, minimax, lsgan or hinge")
        return AdversarialAutoencoder(channels, train.levels, (height, width), latent_dim=args.latent_dim,
                                      prior=args.prior, n_classes=n_classes, supervised=args.supervised,
                                      encoder=args.encoder, likelihood=args.likelihood, arch=args.arch,
                                      hidden=args.hidden * 4, channels=max(1, args.hidden // 2), loss=args.loss)
    if name in GANS:
        if height != width:
            raise ValueError(f"{name} needs square images, {train.name} has {height}x{width}")
        common = dict(latent_dim=args.latent_dim, n_classes=n_classes, loss=args.loss)
        if name == "progan":
            from fastgen.models import ProgressiveGAN

            if height < 4 or height & (height - 1):
                raise ValueError(f"progan grows from 4x4 by doubling: the images must be a power of two >= 4 on a "
                                 f"side, {train.name} has {height}x{width} (resize them with --image-size, e.g. 32)")
            return ProgressiveGAN(channels, train.levels, height, max_channels=args.hidden, **common)
        if name == "dcgan":
            return DCGAN(channels, train.levels, height, width=max(1, args.hidden // 2), norm=args.norm or "batch",
                         **common)
        return MLPGAN(channels, train.levels, height, hidden=args.hidden * 4, norm=args.norm or "none", **common)
    if name == "pixelcnnpp":
        try:
            return PixelCNNpp(channels, train.levels, (height, width), nr_resnet=args.layers, nr_filters=args.hidden,
                              nr_mix=args.nr_mix, dropout=args.dropout, n_classes=n_classes,
                              weight_norm=args.weight_norm)
        except ValueError as e:
            raise ValueError(f"pixelcnnpp on {train.name}: {e}") from None
    common = dict(in_channels=channels, levels=train.levels, image_size=(height, width),
                  hidden_channels=args.hidden, n_layers=args.layers, n_classes=n_classes)
    if name == "pixelcnn":
        return PixelCNN(**common, kernel_size=args.kernel_size or 3)
    return GatedPixelCNN(**common, kernel_size=args.kernel_size or 5, dropout=args.dropout)


def _memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_model_size(name: str, train, args: argparse.Namespace, device: torch.device,
                     build: Callable = build_model) -> None:
    """Build the model on the meta device (no memory) and refuse one whose weights, gradients and
    Adam moments would not fit in this machine's memory, before anything is allocated."""
    with torch.device("meta"):
        model = build(name, train, args)
    params = sum(p.numel() for p in model.parameters())
    need, have = 16 * params, _memory_bytes(device)  # float32 weights, gradients and two Adam moments
    if need > have:
        raise ValueError(f"a {name} of these options has {params:,} parameters: training it needs about "
                         f"{need / 2**30:.1f} GiB, more than the {have / 2**30:.1f} GiB of {device.type} memory here; "
                         "use a smaller --hidden or --layers")


def _quality_options(args: argparse.Namespace) -> dict:
    """The trainers' sample-quality options from --eval-every, --eval-samples and --eval-metrics."""
    return dict(eval_every=args.eval_every, eval_samples=args.eval_samples, eval_metrics=args.eval_metrics)


def train_gan(args: argparse.Namespace, model, train_data, val_data, out: str, device: torch.device,
              rank: int, world: int) -> int:
    from fastgen.train import GANTrainConfig, GANTrainer, ProgressiveTrainConfig, ProgressiveTrainer

    wasserstein = args.loss == "wasserstein"
    common = dict(batch_size=args.batch_size, n_critic=args.n_critic, seed=args.seed,
                  checkpoint_every=args.checkpoint_every, grid_samples=args.grid_samples, amp=args.amp,
                  progress=not args.quiet, **_quality_options(args))
    if args.model == "progan":  # the paper's settings: WGAN-GP with the drift term, Adam (0, 0.99), EMA 0.999
        lr = args.lr or 1e-3
        config = ProgressiveTrainConfig(
            epochs=args.stages, lr_generator=lr, lr_discriminator=lr,
            gp_weight=args.gp_weight if args.gp_weight is not None else (10.0 if wasserstein else None),
            drift=0.001 if wasserstein else 0.0, ema_decay=args.ema if args.ema is not None else 0.999,
            fade_images=args.fade_images, stable_images=args.stable_images,
            stage_batch_sizes=args.stage_batch_sizes, **common)
        trainer = ProgressiveTrainer(model, train_data, out, config, device=device, eval_data=val_data)
    else:
        lr = args.lr or (1e-4 if wasserstein else 2e-4)
        config = GANTrainConfig(epochs=args.epochs, lr_generator=lr, lr_discriminator=lr,
                                betas=(0.0, 0.9) if wasserstein else (0.5, 0.999), gp_weight=args.gp_weight,
                                ema_decay=args.ema, **common)
        trainer = GANTrainer(model, train_data, out, config, device=device, eval_data=val_data)
    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"fastgen train {args.model}: {len(train_data)} training images {train_data.shape} with "
        f"{train_data.levels} levels from {args.data}; {sum(p.numel() for p in model.parameters())} parameters; "
        f"{args.loss} loss; {world} process{'es' if world > 1 else ''}; writing to {out}")
    history = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    if history.d_loss:
        g = history.g_loss[-1]
        say(f"done: epoch {trainer.epoch}, discriminator {history.d_loss[-1]:.4f}, "
            f"generator {'-' if g is None else f'{g:.4f}'}")
    say(f"checkpoint: {os.path.abspath(trainer.last_path)}")
    return 0


def _resolve_defaults(args: argparse.Namespace) -> None:
    """The options whose default depends on the model."""
    if args.loss is None:
        args.loss = "wasserstein" if args.model == "progan" else "non_saturating"
    if args.latent_dim is None:
        args.latent_dim = 64 if args.model == "progan" else 16
    if args.model == "progan":
        if args.epochs is not None:
            raise ValueError("--epochs does not apply to progan: it grows --stages stages (default all), each of "
                             "--fade-images + --stable-images real images")
    elif args.epochs is None:
        args.epochs = 10
    if args.model != "progan":
        for flag, attr, default in (("--stages", "stages", None), ("--fade-images", "fade_images", 20_000),
                                    ("--stable-images", "stable_images", 20_000),
                                    ("--stage-batch-sizes", "stage_batch_sizes", None)):
            if getattr(args, attr) != default:
                raise ValueError(f"{flag} applies to progan only")
    from fastgen.models.gan import MLP_NORMS, NORMS
    from fastgen.models.translation import DISCRIMINATOR_NORMS

    norms = {"dcgan": NORMS, "mlp-gan": MLP_NORMS, **{name: DISCRIMINATOR_NORMS for name in TRANSLATORS}}
    if args.norm is not None and args.norm not in norms.get(args.model, ()):
        raise ValueError(f"--norm {args.norm} does not apply to {args.model}" +
                         (f" (it takes {' or '.join(norms[args.model])})" if args.model in norms else ""))


def train(args: argparse.Namespace) -> int:
    from fastgen.train import TrainConfig, Trainer
    from fastgen.train.distributed import init_from_env, leave_process_group
    from fastgen.train.run_dir import check_run_directory

    out = args.out or os.path.join("runs", args.model)
    _resolve_defaults(args)
    # The run directory is checked first: a refused start costs no data loading and no model.
    check_run_directory(out, resume=args.resume, overwrite=args.overwrite)
    options = getattr(args, "run_options", None)  # set by fastgen.cli: the options to record in OUT/config.json
    if options is not None:
        from fastgen.run_config import check_run_config_file

        check_run_config_file(out)
    rank, world, device = init_from_env(args.device)
    say = print if rank == 0 else (lambda *a, **k: None)
    translator = args.model in TRANSLATORS
    if translator:
        from fastgen.translation_commands import build_translator, translation_datasets

        if world > 1:
            raise ValueError(f"{args.model} trains in one process (not under torchrun)")
        train_data, val_data = translation_datasets(args)
        check_model_size(args.model, train_data, args, device, build_translator)
        torch.manual_seed(args.seed)
        model = build_translator(args.model, train_data, args)
    else:
        train_data, val_data = _datasets(args.data, args.levels, args.val_fraction, args.seed, args.image_size)
        check_model_size(args.model, train_data, args, device)
        torch.manual_seed(args.seed)
        model = build_model(args.model, train_data, args)
    if rank == 0 and options is not None and not args.resume:
        from fastgen.run_config import write_run_config

        write_run_config(out, options)  # `fastgen train --config OUT/config.json` repeats this run
    if translator:
        from fastgen.translation_commands import train_translation

        code = train_translation(args, model, train_data, val_data, out, device)
        _note_resume(args, out, rank)
        return code
    if args.model in GANS:
        code = train_gan(args, model, train_data, val_data, out, device, rank, world)
        _note_resume(args, out, rank)
        leave_process_group()
        return code
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr or 1e-3, lr_decay=args.lr_decay,
                         grad_clip=args.grad_clip, seed=args.seed, checkpoint_every=args.checkpoint_every,
                         grid_samples=args.grid_samples, ema_decay=args.ema, amp=args.amp, progress=not args.quiet,
                         **_quality_options(args))
    trainer = Trainer(model, train_data, val_data, out, config, device=device)
    say(f"fastgen train {args.model}: {len(train_data)} training images {train_data.shape} with "
        f"{train_data.levels} levels from {args.data}; {sum(p.numel() for p in model.parameters())} parameters; "
        f"{world} process{'es' if world > 1 else ''}; writing to {out}")
    history = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    last = history.train_bpd[-1] if history.train_bpd else float("nan")
    message = f"done: epoch {trainer.epoch}, train {last:.4f} bits/dim"
    if history.best_epoch >= 0:
        message += f", best validation {history.best_val_bpd:.4f} bits/dim (epoch {history.best_epoch + 1})"
    say(message)
    best_written = os.path.isdir(trainer.best_path)
    say(f"checkpoints: {os.path.abspath(trainer.last_path)}" +
        (f", {os.path.abspath(trainer.best_path)}" if best_written else ""))
    _note_resume(args, out, rank)
    leave_process_group()
    return 0


def _note_resume(args: argparse.Namespace, out: str, rank: int) -> None:
    """A resume that the trainer accepted and ran adds what it changed to OUT/config.json."""
    if rank == 0 and args.resume and getattr(args, "run_options", None) is not None:
        from fastgen.run_config import note_resume

        note_resume(out, args.run_options)


# -- sample --------------------------------------------------------------------------------------------
def check_output_file(path: str, option: str = "-o/--output") -> None:
    """Refuse an output path that cannot become a file, before the work that would fill it."""
    if os.path.isdir(path):
        raise ValueError(f"{option} {path}: is a directory; expected the path of a PNG file")
    check_parent_directory(path, option)


def check_parent_directory(path: str, option: str) -> None:
    """Refuse a path below a file: missing directories are created, a file in the way cannot be."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"{option} {path}: {parent} is a file, not a directory")


def _partial(path: str, model, n: int, keep_rows: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A PNG of the model's size as levels, repeated n times, with its top rows marked known."""
    from fastgen.data.files import read_image

    channels, (height, width) = model.in_channels, model.image_size
    if keep_rows is not None and not 0 <= keep_rows <= height:
        raise ValueError(f"--keep-rows must be between 0 and {height} (the model's image height), got {keep_rows}")
    array, _ = read_image(path, "L" if channels == 1 else "RGB", None)
    if array.shape[1:] != (height, width):
        raise ValueError(f"--partial {path} is {array.shape[2]}x{array.shape[1]}, the model samples {width}x{height}")
    pixels = torch.from_numpy(array.astype(np.int64))
    levels = torch.div(pixels * model.levels, 256, rounding_mode="floor")
    known = torch.zeros(height, width, dtype=torch.bool)
    known[: height // 2 if keep_rows is None else keep_rows] = True
    return levels.expand(n, -1, -1, -1).clone(), known


def sample(args: argparse.Namespace) -> int:
    """Sample n images; under torchrun each process draws its share (with its slice of the same
    noise, so the images are those of a single process) and rank 0 writes the grid."""
    import fastgen
    from fastgen.sampling import draw_noise
    from fastgen.train import save_grid
    from fastgen.train.distributed import init_from_env, leave_process_group, shard

    check_output_file(args.output)
    rank, world, device = init_from_env(args.device)
    model = fastgen.load(args.checkpoint, device, ema=not args.no_ema).eval()
    refuse_translator(model, "sample")
    latent_model = isinstance(model, (fastgen.models.VAE, fastgen.models.GAN))
    if latent_model and (args.partial or args.naive):
        raise ValueError(f"--partial and --naive are for autoregressive models, not a {type(model).__name__}")
    if getattr(model, "cond_channels", None) is not None:
        raise ValueError("this model needs a spatial conditioning map; sample it from Python")
    labels = None
    if model.n_classes is not None:
        if args.cls is not None and not 0 <= args.cls < model.n_classes:
            raise ValueError(f"--class must be in [0, {model.n_classes}), got {args.cls}")
        labels = (torch.full((args.n,), args.cls) if args.cls is not None
                  else torch.arange(args.n) % model.n_classes)
    elif args.cls is not None:
        raise ValueError("--class given, but the model is not class-conditional")
    partial = _partial(args.partial, model, args.n, args.keep_rows) if args.partial else None
    noise = None if latent_model else draw_noise(args.n, model.noise_shape,
                                                 generator=torch.Generator().manual_seed(args.seed))
    mine = shard(torch.arange(args.n), rank, world)
    images = torch.empty(0, model.in_channels, *model.image_size, dtype=torch.long)
    if latent_model:  # one process draws them all: latent models sample in one batch
        if rank == 0:
            images = model.sample(args.n, labels.to(device) if labels is not None else None,
                                  generator=torch.Generator(device).manual_seed(args.seed)).cpu()
    elif len(mine):  # with fewer images than processes, some have none
        images = model.sample(len(mine), labels[mine].to(device) if labels is not None else None,
                              partial=(partial[0][mine], partial[1]) if partial else None,
                              noise=noise[mine].to(device), cache=not args.naive).cpu()
    if world > 1:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, images)
        images = torch.cat(gathered)
        leave_process_group()
    if rank == 0:
        nrow = model.n_classes if labels is not None and args.cls is None else math.ceil(math.sqrt(args.n))
        print(os.path.abspath(save_grid(args.output, images, model.levels, min(nrow, args.n))))
    return 0


# -- eval ----------------------------------------------------------------------------------------------
def evaluate(args: argparse.Namespace) -> int:
    """Bits/dim where the model has a likelihood; with --metrics, sample quality against --against."""
    import fastgen
    from fastgen.data import load
    from fastgen.train.distributed import resolve_device
    from fastgen.train.evaluate import bits_per_dim_on

    device = resolve_device(args.device)
    model = fastgen.load(args.checkpoint, device, ema=not args.no_ema)
    refuse_translator(model, "eval")
    is_gan = isinstance(model, fastgen.models.GAN)
    if is_gan and not args.metrics:
        raise ValueError("a GAN has no likelihood to evaluate; ask for sample quality with --metrics fid,kid,is,pr")
    if getattr(model, "cond_channels", None) is not None:
        raise ValueError("this model needs a spatial conditioning map; evaluate it from Python")
    if not is_gan:
        data = _evaluation_data(load(args.data, args.split), model)
        bpd = bits_per_dim_on(model, data, batch_size=args.batch_size, device=device)
        bound = ""
        if isinstance(model, fastgen.models.VAE):
            bound = (" (negative ELBO, an upper bound)" if model.variational
                     else " (reconstruction -log p(x | encoder(x)), not a likelihood)")
        print(f"{args.data} ({args.split}, {len(data)} images): {bpd:.4f} bits/dim{bound}, "
              f"{bpd * math.log(2.0) * model.dims:.2f} nats per image")
        if isinstance(model, fastgen.models.VAE) and model.variational and args.k:
            nats = _importance_weighted_nll(model, data, args, device)
            print(f"  importance-weighted estimate, k={args.k}: {nats / (math.log(2.0) * model.dims):.4f} bits/dim, "
                  f"{nats:.2f} nats per image")
    if args.metrics:
        from fastgen.metrics.quality import sample_quality

        reference = _evaluation_data(load(args.data, args.against), model)
        report = sample_quality(model, reference, metrics=args.metrics, n=args.n, seed=args.seed,
                                inception_weights=args.inception_weights,
                                batch_size=args.batch_size)
        print(f"sample quality ({args.against} split of {args.data}; {report.seconds:.1f} s):")
        print(report.summary())
    return 0


def _evaluation_data(data, model):
    """``data`` checked against the model's image shape, levels and classes (quantised to its levels)."""
    data = image_data(data, data.name)
    if data.shape != (model.in_channels, *model.image_size):
        raise ValueError(f"{data.name} has images of shape {data.shape}, the model takes "
                         f"{(model.in_channels, *model.image_size)}")
    if data.levels < model.levels:
        raise ValueError(f"{data.name} has {data.levels} levels, fewer than the model's {model.levels}")
    if data.levels != model.levels:
        data = data.quantize(model.levels)
    if model.n_classes is not None and data.n_classes is not None and data.n_classes > model.n_classes:
        raise ValueError(f"{data.name} has {data.n_classes} classes, the model {model.n_classes}")
    return data


@torch.no_grad()
def _importance_weighted_nll(model, data, args: argparse.Namespace, device: torch.device) -> float:
    """Mean -log p(x) of a VAE over ``data`` by importance weighting with args.k samples."""
    model.eval()
    total, generator = 0.0, torch.Generator(device).manual_seed(0)
    for index in torch.arange(len(data)).split(max(1, args.batch_size // 4)):
        x = data.images[index].to(device, torch.long)
        labels = data.labels[index].to(device) if model.n_classes is not None else None
        total -= model.log_likelihood(x, labels, k=args.k, generator=generator).nats.sum().item()
    return total / len(data)


# -- convert -------------------------------------------------------------------------------------------
def convert(args: argparse.Namespace) -> int:
    """A PixelCNN++ trained with a reference code, written as a fastgen checkpoint directory."""
    from fastgen.interop import load_pixelcnnpp
    from fastgen.train.checkpoint import CONFIG, FORMAT, config_format, save_checkpoint

    out = args.output
    if args.no_ema and args.source != "openai":
        raise ValueError("--no-ema applies to --source openai (a pclucas14 state_dict holds one set of weights)")
    # Writing replaces OUT (and the OUT.old of an interrupted replacement): only ever a checkpoint.
    for path in (out, out.rstrip("/") + ".old"):
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"-o/--output {out}: {path} is a file; expected the path of a checkpoint directory")
        if os.path.isdir(path) and os.listdir(path) and config_format(os.path.join(path, CONFIG)) != FORMAT:
            raise ValueError(f"-o/--output {out}: {path} is a directory that is not a fastgen checkpoint; choose "
                             "a new path")
    if os.path.isdir(out) and os.listdir(out) and not args.overwrite:
        raise ValueError(f"-o/--output {out}: a checkpoint is there; --overwrite replaces it")
    check_parent_directory(out, "-o/--output")
    model = load_pixelcnnpp(args.weights, source=args.source, levels=args.levels, image_size=args.image_size,
                            ema=False if args.no_ema else None)
    config = model.config()
    save_checkpoint(out, model_type=type(model).__name__, model_config=config, weights=model.state_dict(),
                    meta={"converted_from": {"source": args.source, "weights": os.path.abspath(args.weights)}})
    print(f"PixelCNNpp from {args.source}: nr_resnet {config['nr_resnet']}, nr_filters {config['nr_filters']}, "
          f"nr_mix {config['nr_mix']}, {config['in_channels']} channel{'s' if config['in_channels'] > 1 else ''}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters")
    print(os.path.abspath(out))
    return 0


# -- parsers -------------------------------------------------------------------------------------------
def add_commands(commands: argparse._SubParsersAction,
                 parents: list[argparse.ArgumentParser]) -> dict[str, argparse.ArgumentParser]:
    """The train, sample, eval, convert and translate parsers, by name (``parents``: options every command
    takes, e.g. --debug)."""
    t = commands.add_parser("train", parents=parents, help="train a model on a data set, writing checkpoints, "
                                                           "sample grids and metrics.jsonl to --out")
    # model and --data are required, but may come from --config: fastgen.cli checks them after the file is read.
    t.add_argument("model", nargs="?", choices=MODELS, default=None, help=f"{' | '.join(MODELS)}")
    t.add_argument("--config", type=path_option, default=None, metavar="FILE",
                   help="read the options from FILE: a TOML file of flag = value lines, or a run's config.json "
                        "(which repeats that run); flags on the command line override it")
    t.add_argument("--data", default=None, help="digits | digits-binary | mnist:DIR | cifar10:DIR | folder:DIR | "
                                                "npz:FILE; pix2pix: edges-digits | pairs:DIR; cyclegan: "
                                                "inverted-digits | unpaired:DIR")
    t.add_argument("--levels", type=int_option(2, 65536), default=None, help="quantise the data to this many levels")
    t.add_argument("--image-size", type=int_option(4, 1024), default=None, metavar="SIZE",
                   help="resize the images to SIZE x SIZE first (bilinear up, area average down; e.g. progan --data "
                        "digits --image-size 32)")
    t.add_argument("--val-fraction", type=float_option(0.0, 1.0, high_open=True), default=0.05,
                   help="training images held out for validation, in [0, 1) (the digits have their own split)")
    t.add_argument("--conditional", action=SWITCH, default=False, help="condition on the data set's class labels")
    t.add_argument("--hidden", type=int_option(1, 4096), default=64,
                   help="hidden channels (default 64); vae, aae and mlp-gan layers are 4x wider, dcgan's first is 1/2; "
                        "pixelvae: its PixelCNN's; pix2pix, cyclegan: the networks' first layer")
    t.add_argument("--layers", type=int_option(1, 256), default=6,
                   help="layers / residual blocks (default 6); pixelcnnpp: gated resnets per resolution; pixelvae: its "
                        "PixelCNN's gated layers; cyclegan: residual blocks per generator")
    t.add_argument("--kernel-size", type=int_option(1, 31), default=None,
                   help="odd; default 5 (gated-pixelcnn, pixelvae), 3 (pixelcnn)")
    t.add_argument("--dropout", type=float_option(0.0, 1.0, high_open=True), default=0.0,
                   help="gated-pixelcnn, pixelcnnpp, pixelvae, pix2pix (default 0; pix2pix's paper uses 0.5)")
    t.add_argument("--nr-mix", type=int_option(1, 100), default=5,
                   help="pixelcnnpp: logistic mixture components (default 5)")
    t.add_argument("--weight-norm", action=SWITCH, default=False, help="pixelcnnpp: weight-normalise every convolution")
    t.add_argument("--latent-dim", type=int_option(1, 4096), default=None,
                   help="vae, pixelvae, aae, dcgan, mlp-gan, progan: latent size (default 16; progan 64)")
    t.add_argument("--likelihood", default="categorical", choices=("bernoulli", "categorical", "gaussian", "logistic"),
                   help="vae, aae: p(x|z) (default categorical)")
    t.add_argument("--arch", default="conv", choices=("mlp", "conv"), help="vae, aae: encoder/decoder (default conv)")
    t.add_argument("--beta", type=float_option(0.0), default=1.0, help="vae, pixelvae: KL weight, >= 0 (default 1)")
    t.add_argument("--free-bits", type=float_option(0.0), default=0.0,
                   help="pixelvae: nats of KL per latent dimension the training loss does not penalise (default 0)")
    t.add_argument("--prior", default="gaussian", choices=("gaussian", "mixture", "swiss_roll"),
                   help="aae: the code prior (default gaussian; swiss_roll is 2-D)")
    t.add_argument("--supervised", action=SWITCH, default=False,
                   help="aae: the decoder reads the label (with --conditional); without it, --conditional ties each "
                        "class to a region of the prior")
    t.add_argument("--encoder", default="deterministic", choices=("deterministic", "gaussian"),
                   help="aae: the encoder (default deterministic)")
    t.add_argument("--loss", default=None,
                   choices=("minimax", "non_saturating", "lsgan", "hinge", "wasserstein"),
                   help="dcgan, mlp-gan, progan, aae, pix2pix: the GAN loss (default non_saturating; progan "
                        "wasserstein, with --gp-weight 10 and the drift term; cyclegan is lsgan)")
    t.add_argument("--n-critic", type=int_option(1), default=1,
                   help="dcgan, mlp-gan, progan: discriminator steps per generator step")
    t.add_argument("--gp-weight", type=float_option(0.0, low_open=True), default=None,
                   help="dcgan, mlp-gan, progan: WGAN-GP penalty weight (e.g. 10; progan's default with its "
                        "wasserstein loss)")
    t.add_argument("--norm", default=None, choices=("batch", "layer", "instance", "spectral", "none"),
                   help="the discriminator's normalisation: dcgan batch (default), layer, spectral or none (WGAN-GP: "
                        "not batch); mlp-gan spectral or none (default); pix2pix, cyclegan instance (default) or "
                        "spectral")
    t.add_argument("--stages", type=int_option(1, 16), default=None,
                   help="progan: stages to grow, from 4x4 (default: all, up to the image size)")
    t.add_argument("--fade-images", type=int_option(1), default=20_000,
                   help="progan: real images shown while a new stage fades in (default 20000)")
    t.add_argument("--stable-images", type=int_option(1), default=20_000,
                   help="progan: real images shown per stage after its fade-in (default 20000)")
    t.add_argument("--stage-batch-sizes", type=int_list_option, default=None, metavar="B0,B1,...",
                   help="progan: batch size of each stage from 4x4 on (later stages: --batch-size)")
    t.add_argument("--l1-weight", type=float_option(0.0), default=100.0,
                   help="pix2pix: weight of the L1 term (default 100)")
    t.add_argument("--cycle-weight", type=float_option(0.0), default=10.0,
                   help="cyclegan: weight of the cycle-consistency terms (default 10)")
    t.add_argument("--identity-weight", type=float_option(0.0), default=0.5,
                   help="cyclegan: identity terms' weight, a fraction of --cycle-weight (default 0.5; 0 when the "
                        "domains' channels differ)")
    t.add_argument("--patch-layers", type=int_option(1, 8), default=None,
                   help="pix2pix, cyclegan: the PatchGAN's strided layers (patches of 16, 34, 70 pixels for 1, 2, 3; "
                        "default: the largest patch at most half the image)")
    t.add_argument("--pool-size", type=int_option(0), default=None,
                   help="pix2pix, cyclegan: generated images kept per discriminator (default 50 cyclegan, 0 pix2pix)")
    t.add_argument("--decay-from", type=float_option(0.0, 1.0), default=0.5,
                   help="pix2pix, cyclegan: fraction of the steps after which the learning rate falls linearly to 0 "
                        "(default 0.5; 1 keeps it constant)")
    t.add_argument("--epochs", type=int_option(1, MAX_EPOCHS), default=None,
                   help="passes over the training data (default 10; progan: see --stages)")
    t.add_argument("--batch-size", type=int_option(1), default=64)
    t.add_argument("--lr", type=float_option(0.0, low_open=True), default=None,
                   help="learning rate (default 1e-3; GANs, pix2pix, cyclegan 2e-4, Wasserstein 1e-4); with --resume, "
                        "a new value applies from the resumed step on")
    t.add_argument("--lr-decay", type=float_option(0.0, 1.0, low_open=True), default=1.0,
                   help="learning rate factor per epoch, in (0, 1]")
    t.add_argument("--grad-clip", type=float_option(0.0, low_open=True), default=1.0,
                   help="maximum gradient norm, > 0 (default 1)")
    t.add_argument("--ema", type=float_option(0.0, 1.0, low_open=True, high_open=True), default=None,
                   metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999; GANs: of the generator's) for "
                        "validation, grids and sampling (progan: default 0.999)")
    t.add_argument("--amp", action=SWITCH, default=False,
                   help="bfloat16 autocast for the training loss (GANs: for both networks)")
    t.add_argument("--checkpoint-every", type=int_option(1), default=None, metavar="STEPS")
    t.add_argument("--grid-samples", type=int_option(0, 100), default=10,
                   help="sample grid per epoch, this many per row (0: none; at most 100)")
    t.add_argument("--eval-every", type=int_option(1, MAX_EPOCHS), default=None, metavar="EPOCHS",
                   help="score sample quality every this many epochs against the validation split (the training "
                        "split for GANs without one), logged to metrics.jsonl as quality/*")
    t.add_argument("--eval-samples", type=int_option(2), default=1000, help="samples per --eval-every evaluation")
    t.add_argument("--eval-metrics", type=metrics_option, default="fid,kid,is,pr",
                   help="for --eval-every: a comma-separated subset of fid,kid,is,pr")
    t.add_argument("--seed", type=SEED, default=0)
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    t.add_argument("--out", type=path_option, default=None, help="run directory (default runs/MODEL)")
    run = t.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true",
                     help="continue the run in OUT from OUT/last exactly where it stopped (give its options again)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the run in OUT (its checkpoints, metrics and grids); without --resume or "
                          "--overwrite, a directory that holds a run is refused")
    t.add_argument("--quiet", action=SWITCH, default=False, help="no progress bar")
    t.set_defaults(run=lambda args, extra: train(args))

    s = commands.add_parser("sample", parents=parents, help="draw images from a checkpoint into a PNG grid")
    s.add_argument("checkpoint", type=path_option,
                   help="a checkpoint directory, or a run directory (its best, else last)")
    s.add_argument("-n", type=int_option(1, MAX_SAMPLES), default=16,
                   help=f"number of images (default 16, at most {MAX_SAMPLES})")
    s.add_argument("-o", "--output", type=path_option, default="samples.png", help="PNG file (default samples.png)")
    s.add_argument("--class", dest="cls", type=int_option(0), default=None, metavar="K",
                   help="class of every image (default: classes in turn, one row per class)")
    s.add_argument("--partial", type=path_option, default=None, metavar="IMAGE",
                   help="complete this PNG (the model's size): its top rows are kept, the rest sampled")
    s.add_argument("--keep-rows", type=int_option(0), default=None, help="rows of --partial to keep (default: half)")
    s.add_argument("--seed", type=SEED, default=0)
    s.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    s.add_argument("--no-ema", action="store_true", help="the trained weights, not their moving average")
    s.add_argument("--naive", action="store_true", help="the naive sampler (one forward pass per sub-pixel)")
    s.set_defaults(run=lambda args, extra: sample(args))

    e = commands.add_parser("eval", parents=parents, help="bits/dim of a checkpoint on a data set, and with --metrics "
                                                          "the quality of its samples (FID, KID, IS, precision/recall)")
    e.add_argument("checkpoint", type=path_option,
                   help="a checkpoint directory, or a run directory (its best, else last)")
    e.add_argument("--data", required=True, help="as for train")
    e.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="train | val (digits only) | test (default test)")
    e.add_argument("--batch-size", type=int_option(1), default=256)
    e.add_argument("--k", type=int_option(0, MAX_IW_SAMPLES), default=100,
                   help="vae, pixelvae: samples of the importance-weighted likelihood estimate (0: skip; default 100)")
    e.add_argument("--metrics", type=metrics_option, default=None,
                   help="sample quality: a comma-separated subset of fid,kid,is,pr (the only evaluation of a GAN)")
    e.add_argument("-n", "--n", type=int_option(2, MAX_QUALITY_SAMPLES), default=10_000,
                   help="--metrics: samples drawn (default 10000)")
    e.add_argument("--against", default="test", choices=("train", "val", "test"),
                   help="--metrics: the split of --data the samples are compared with (default test)")
    e.add_argument("--inception-weights", type=path_option, default=None, metavar="PATH",
                   help="--metrics: InceptionV3 weights (torch-fidelity's or pytorch-fid's file); images other than "
                        "the bundled 8x8 digits read $FASTGEN_INCEPTION_WEIGHTS without it, and the digits use "
                        "fastgen's digits network unless it is given")
    e.add_argument("--seed", type=SEED, default=0, help="--metrics: seed of the samples")
    e.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    e.add_argument("--no-ema", action="store_true", help="the trained weights, not their moving average")
    e.set_defaults(run=lambda args, extra: evaluate(args))

    c = commands.add_parser("convert", parents=parents,
                            help="write a PixelCNN++ trained with pclucas14/pixel-cnn-pp or openai/pixel-cnn as a "
                                 "fastgen checkpoint directory (for sample, eval and Python)")
    c.add_argument("weights", type=path_option,
                   help="pclucas14: the .pth state_dict file; openai: the checkpoint prefix or its .index file")
    c.add_argument("-o", "--output", type=path_option, required=True, metavar="DIR", help="checkpoint directory")
    c.add_argument("--source", required=True, choices=("pclucas14", "openai"), help="the code that trained WEIGHTS")
    c.add_argument("--levels", type=int_option(2, 65536), default=256, help="levels per sub-pixel (default 256)")
    c.add_argument("--image-size", type=int_option(4, 4096), default=32,
                   help="height and width the model samples, a multiple of 4 (default 32)")
    c.add_argument("--no-ema", action="store_true",
                   help="openai: the trained values, not their Polyak averages (used by default when present)")
    c.add_argument("--overwrite", action="store_true", help="replace a checkpoint at DIR")
    c.set_defaults(run=lambda args, extra: convert(args))
    from fastgen.translation_commands import add_translate_command

    return {"train": t, "sample": s, "eval": e, "convert": c,
            "translate": add_translate_command(commands, parents, path_option, int_option)}
