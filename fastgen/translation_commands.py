"""``fastgen train pix2pix|cyclegan`` and ``fastgen translate``: the image-to-image models on the
command line (parsed in fastgen/commands.py and fastgen/cli.py)."""
from __future__ import annotations

import argparse
import os

import torch

TRANSLATORS = ("pix2pix", "cyclegan")
# Train options that only some models read: (flag, attribute, default, the translators that read it).
# Any other value for a translator that does not read it is refused, rather than silently ignored.
UNUSED_OPTIONS = (
    ("--conditional", "conditional", False, ()), ("--levels", "levels", None, ()),
    ("--image-size", "image_size", None, ()), ("--ema", "ema", None, ()),
    ("--amp", "amp", False, ()), ("--eval-every", "eval_every", None, ()), ("--lr-decay", "lr_decay", 1.0, ()),
    ("--grad-clip", "grad_clip", 1.0, ()), ("--n-critic", "n_critic", 1, ()), ("--gp-weight", "gp_weight", None, ()),
    ("--loss", "loss", "non_saturating", ("pix2pix",)), ("--l1-weight", "l1_weight", 100.0, ("pix2pix",)),
    ("--dropout", "dropout", 0.0, ("pix2pix",)), ("--layers", "layers", 6, ("cyclegan",)),
    ("--cycle-weight", "cycle_weight", 10.0, ("cyclegan",)),
    ("--identity-weight", "identity_weight", 0.5, ("cyclegan",)),
)
DATA_KINDS = {"pix2pix": ("pairs", "edges-digits"), "cyclegan": ("unpaired", "inverted-digits")}


def translation_datasets(args: argparse.Namespace):
    """(train, validation) image-to-image data for --data: the bundled sets' own validation split,
    a pairs folder's val/ when it has one, otherwise none."""
    from fastgen.data import load

    for flag, attr, default, users in UNUSED_OPTIONS:
        if args.model not in users and getattr(args, attr) != default:
            raise ValueError(f"{flag} does not apply to {args.model}")
    kind = args.data.partition(":")[0]
    if kind not in DATA_KINDS[args.model]:
        wanted = " or ".join(f"'{k}'" if k.endswith("digits") else f"'{k}:DIR'" for k in DATA_KINDS[args.model])
        raise ValueError(f"{args.model} trains on {wanted} data, got --data {args.data!r}")
    train = load(args.data, "train")
    val = None
    if kind.endswith("digits"):
        val = load(args.data, "val")
    elif kind == "pairs" and any(os.path.isdir(os.path.join(args.data.partition(":")[2], *parts, "val"))
                                 for parts in ((), ("A",))):
        val = load(args.data, "val")
    return train, val


def build_translator(name: str, train, args: argparse.Namespace):
    from fastgen.models import CycleGAN, Pix2Pix

    source, target = (train.source, train.target) if name == "pix2pix" else (train.a, train.b)
    if source.shape[1] != source.shape[2]:
        raise ValueError(f"{name} needs square images, {train.name} has {source.shape[1]}x{source.shape[2]}")
    if source.levels != target.levels:
        raise ValueError(f"{train.name}: the two domains have {source.levels} and {target.levels} levels")
    common = dict(source_channels=source.shape[0], target_channels=target.shape[0], levels=source.levels,
                  image_size=source.shape[1], width=args.hidden, patch_layers=args.patch_layers,
                  norm=args.norm or "instance")
    if name == "pix2pix":
        return Pix2Pix(**common, l1_weight=args.l1_weight, loss=args.loss, dropout=args.dropout)
    identity = args.identity_weight if source.shape[0] == target.shape[0] else 0.0
    return CycleGAN(**common, blocks=args.layers, cycle_weight=args.cycle_weight, identity_weight=identity)


def train_translation(args: argparse.Namespace, model, train_data, val_data, out: str, device: torch.device) -> int:
    from fastgen.train import TranslationTrainConfig, TranslationTrainer

    config = TranslationTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr or 2e-4,
                                    decay_from=args.decay_from, pool_size=args.pool_size, seed=args.seed,
                                    checkpoint_every=args.checkpoint_every, grid_samples=args.grid_samples,
                                    progress=not args.quiet)
    trainer = TranslationTrainer(model, train_data, out, config, device=device, val_data=val_data)
    print(f"fastgen train {args.model}: {train_data.name}, {len(train_data)} training "
          f"{'pairs' if args.model == 'pix2pix' else 'images (A, B)'}; "
          f"{sum(p.numel() for p in model.parameters())} parameters; writing to {out}")
    history = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    if history.losses:
        message = f"done: epoch {trainer.epoch}, generator {history.losses['g'][-1]:.4f}, " \
                  f"discriminator {history.losses['d'][-1]:.4f}"
        if history.val_error:
            message += f", validation error {history.val_error[-1]:.4f} (mean |translation - truth| in [0, 1])"
        print(message)
    print(f"checkpoint: {os.path.abspath(trainer.last_path)}")
    return 0


def _input_images(path: str, shape: tuple[int, int, int]) -> tuple[list[str], torch.Tensor]:
    """(file names, images (N, C, H, W) uint8) of one image or a directory of images, converted to
    the model's channels and resized to its size."""
    from fastgen.data.files import image_names, read_image

    if os.path.isdir(path):
        names = image_names(path)
        files = [os.path.join(path, n) for n in names]
    elif os.path.isfile(path):
        names, files = [os.path.basename(path)], [path]
    else:
        raise ValueError(f"--input {path}: no such file or directory")
    mode = "L" if shape[0] == 1 else "RGB"
    arrays = [torch.from_numpy(read_image(f, mode, shape[1:])[0].copy()) for f in files]
    return names, torch.stack(arrays)


def translate(args: argparse.Namespace) -> int:
    """Translate images with a trained Pix2Pix or CycleGAN, writing one PNG per input image."""
    import fastgen
    from fastgen.models import CycleGAN, ImageTranslator
    from fastgen.train.distributed import resolve_device
    from fastgen.train.grid import save_grid

    device = resolve_device(args.device)
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise ValueError(f"-o/--output {args.output}: is a file; expected a directory for the translated images")
    model = fastgen.load(args.checkpoint, device)
    if not isinstance(model, ImageTranslator):
        raise ValueError(f"{args.checkpoint} holds a {type(model).__name__}; translate takes a pix2pix or cyclegan "
                         "run")
    if args.direction == "backward" and not isinstance(model, CycleGAN):
        raise ValueError("--direction backward: only a CycleGAN translates both ways (pix2pix maps source -> target)")
    forward = args.direction == "forward"
    if os.path.isdir(args.input) and os.path.realpath(args.input) == os.path.realpath(args.output):
        raise ValueError(f"-o/--output {args.output} is the --input directory: the translations would replace the "
                         "images; choose another directory")
    names, images = _input_images(args.input, model.source_shape if forward else model.target_shape)
    stems = [os.path.splitext(n)[0] for n in names]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise ValueError(f"--input {args.input}: {', '.join(n for n in names if os.path.splitext(n)[0] in clash)} "
                         "would all be written to the same PNG; rename them")
    if model.levels != 256:
        images = (images.long() * (model.levels - 1) + 127) // 255  # 8-bit files onto the model's levels
    out = model.translate(images.long(), args.direction, batch_size=args.batch_size)
    os.makedirs(args.output, exist_ok=True)
    written = [save_grid(os.path.join(args.output, os.path.splitext(name)[0] + ".png"), image[None], model.levels, 1,
                         scale=1, pad=0) for name, image in zip(names, out)]
    print(f"{len(written)} image{'s' if len(written) != 1 else ''} translated "
          f"({'source -> target' if forward else 'target -> source'}) into {os.path.abspath(args.output)}")
    return 0


def add_translate_command(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser],
                          path_option, int_option) -> argparse.ArgumentParser:
    p = commands.add_parser("translate", parents=parents,
                            help="translate images with a trained pix2pix or cyclegan run, one PNG per input image")
    p.add_argument("checkpoint", type=path_option, help="a checkpoint directory, or a run directory (its last)")
    p.add_argument("--input", type=path_option, required=True, metavar="DIR|IMAGE",
                   help="an image or a directory of images (resized to the model's size)")
    p.add_argument("-o", "--output", type=path_option, required=True, metavar="DIR",
                   help="directory for the translated PNGs (same names; existing files are replaced)")
    p.add_argument("--direction", default="forward", choices=("forward", "backward"),
                   help="forward: source -> target (A -> B); backward: B -> A (cyclegan only)")
    p.add_argument("--batch-size", type=int_option(1), default=64)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.set_defaults(run=lambda args, extra: translate(args))
    return p
