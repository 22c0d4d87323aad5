"""The ``fastgen train``, ``fastgen sample`` and ``fastgen eval`` commands (parsed in fastgen/cli.py)."""
from __future__ import annotations

import argparse
import math
import os

import numpy as np
import torch

MODELS = ("pixelcnn", "gated-pixelcnn")


def _datasets(spec: str, levels: int | None, val_fraction: float, seed: int):
    """(train, validation) for a data spec: the digits' own validation split, otherwise a seeded
    ``val_fraction`` of the training files."""
    from fastgen.data import load

    train = load(spec, "train")
    if spec.startswith("digits"):
        val = load(spec, "val")
    elif val_fraction > 0:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        cut = max(1, int(len(train) * val_fraction))
        train, val = train.subset(order[cut:], train.name), train.subset(order[:cut], f"{train.name} (validation)")
    else:
        val = None
    if levels is not None and levels != train.levels:
        train, val = train.quantize(levels), val.quantize(levels) if val is not None else None
    return train, val


def build_model(name: str, train, args: argparse.Namespace) -> torch.nn.Module:
    from fastgen.models import GatedPixelCNN, PixelCNN

    channels, height, width = train.shape
    common = dict(in_channels=channels, levels=train.levels, image_size=(height, width),
                  hidden_channels=args.hidden, n_layers=args.layers,
                  n_classes=train.n_classes if args.conditional else None)
    if args.conditional and train.labels is None:
        raise SystemExit(f"fastgen train: --conditional needs labels, and {train.name} has none")
    if name == "pixelcnn":
        return PixelCNN(**common, kernel_size=args.kernel_size or 3)
    return GatedPixelCNN(**common, kernel_size=args.kernel_size or 5, dropout=args.dropout)


def train(args: argparse.Namespace) -> int:
    from fastgen.train import TrainConfig, Trainer
    from fastgen.train.distributed import init_from_env

    rank, world, device = init_from_env(args.device)
    say = print if rank == 0 else (lambda *a, **k: None)
    train_data, val_data = _datasets(args.data, args.levels, args.val_fraction, args.seed)
    out = args.out or os.path.join("runs", args.model)
    torch.manual_seed(args.seed)
    model = build_model(args.model, train_data, args)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_decay=args.lr_decay,
                         grad_clip=args.grad_clip, seed=args.seed, checkpoint_every=args.checkpoint_every,
                         grid_samples=args.grid_samples, ema_decay=args.ema, amp=args.amp, progress=not args.quiet)
    trainer = Trainer(model, train_data, val_data, out, config, device=device)
    say(f"fastgen train {args.model}: {len(train_data)} training images {train_data.shape} with "
        f"{train_data.levels} levels from {args.data}; {sum(p.numel() for p in model.parameters())} parameters; "
        f"{world} process{'es' if world > 1 else ''}; writing to {out}")
    history = trainer.fit(resume=args.resume)
    last = history.train_bpd[-1] if history.train_bpd else float("nan")
    message = f"done: epoch {trainer.epoch}, train {last:.4f} bits/dim"
    if history.val_bpd:
        message += f", best validation {history.best_val_bpd:.4f} bits/dim (epoch {history.best_epoch + 1})"
    say(message)
    say(f"checkpoints: {os.path.abspath(trainer.last_path)}" +
        (f", {os.path.abspath(trainer.best_path)}" if history.val_bpd else ""))
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


def _partial(path: str, model, n: int, keep_rows: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A PNG of the model's size as levels, repeated n times, with its top rows marked known."""
    from PIL import Image

    channels, (height, width) = model.in_channels, model.image_size
    try:
        image = Image.open(path).convert("L" if channels == 1 else "RGB")
    except OSError as e:
        raise SystemExit(f"fastgen sample: --partial {path}: not a readable image ({e})") from None
    if image.size != (width, height):
        raise SystemExit(f"fastgen sample: --partial {path} is {image.size[0]}x{image.size[1]}, the model samples "
                         f"{width}x{height}")
    pixels = torch.from_numpy(np.asarray(image, dtype=np.int64).copy()).reshape(height, width, -1).permute(2, 0, 1)
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
    from fastgen.train.distributed import init_from_env, shard

    rank, world, device = init_from_env(args.device)
    model = fastgen.load(args.checkpoint, device, ema=not args.no_ema).eval()
    if model.cond_channels is not None:
        raise SystemExit("fastgen sample: this model needs a spatial conditioning map; sample it from Python")
    labels = None
    if model.n_classes is not None:
        if args.cls is not None and not 0 <= args.cls < model.n_classes:
            raise SystemExit(f"fastgen sample: --class must be in [0, {model.n_classes}), got {args.cls}")
        labels = (torch.full((args.n,), args.cls) if args.cls is not None
                  else torch.arange(args.n) % model.n_classes)
    elif args.cls is not None:
        raise SystemExit("fastgen sample: --class given, but the model is not class-conditional")
    partial = _partial(args.partial, model, args.n, args.keep_rows) if args.partial else None
    noise = draw_noise(args.n, (model.in_channels, *model.image_size), generator=torch.Generator().manual_seed(args.seed))
    mine = shard(torch.arange(args.n), rank, world)
    images = torch.empty(0, model.in_channels, *model.image_size, dtype=torch.long)
    if len(mine):  # with fewer images than processes, some have none
        images = model.sample(len(mine), labels[mine].to(device) if labels is not None else None,
                              partial=(partial[0][mine], partial[1]) if partial else None,
                              noise=noise[mine].to(device), cache=not args.naive).cpu()
    if world > 1:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, images)
        images = torch.cat(gathered)
        torch.distributed.destroy_process_group()
    if rank == 0:
        nrow = model.n_classes if labels is not None and args.cls is None else math.ceil(math.sqrt(args.n))
        print(os.path.abspath(save_grid(args.output, images, model.levels, min(nrow, args.n))))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    import fastgen
    from fastgen.data import load
    from fastgen.train.evaluate import bits_per_dim_on

    model = fastgen.load(args.checkpoint, args.device, ema=not args.no_ema)
    data = load(args.data, args.split)
    if data.levels != model.levels:
        data = data.quantize(model.levels)
    bpd = bits_per_dim_on(model, data, batch_size=args.batch_size, device=args.device)
    print(f"{args.data} ({args.split}, {len(data)} images): {bpd:.4f} bits/dim, "
          f"{bpd * math.log(2.0) * model.dims:.2f} nats per image")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    t = commands.add_parser("train", help="train a model on a data set, writing checkpoints, sample grids and "
                                          "metrics.jsonl to --out")
    t.add_argument("model", choices=MODELS)
    t.add_argument("--data", required=True, help="digits | digits-binary | mnist:DIR | cifar10:DIR | folder:DIR | "
                                                 "npz:FILE")
    t.add_argument("--levels", type=int, default=None, help="quantise the data to this many levels")
    t.add_argument("--val-fraction", type=float, default=0.05,
                   help="training images held out for validation (the digits have their own split)")
    t.add_argument("--conditional", action="store_true", help="condition on the data set's class labels")
    t.add_argument("--hidden", type=int, default=64, help="hidden channels (default 64)")
    t.add_argument("--layers", type=int, default=6, help="layers / residual blocks (default 6)")
    t.add_argument("--kernel-size", type=int, default=None, help="default 5 (gated-pixelcnn), 3 (pixelcnn)")
    t.add_argument("--dropout", type=float, default=0.0, help="gated-pixelcnn only")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--lr-decay", type=float, default=1.0, help="learning rate factor per epoch")
    t.add_argument("--grad-clip", type=float, default=1.0)
    t.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999) for validation and sampling")
    t.add_argument("--amp", action="store_true", help="bfloat16 autocast for the training loss")
    t.add_argument("--checkpoint-every", type=int, default=None, metavar="STEPS")
    t.add_argument("--grid-samples", type=int, default=10, help="sample grid per epoch, this many per row (0: none)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu")
    t.add_argument("--out", default=None, help="run directory (default runs/MODEL)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last exactly where it stopped")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(run=lambda args, extra: train(args))

    s = commands.add_parser("sample", help="draw images from a checkpoint into a PNG grid")
    s.add_argument("checkpoint", help="a checkpoint directory, or a run directory (its best, else last)")
    s.add_argument("-n", type=int, default=16, help="number of images (default 16)")
    s.add_argument("-o", "--output", default="samples.png", help="PNG file (default samples.png)")
    s.add_argument("--class", dest="cls", type=int, default=None, metavar="K",
                   help="class of every image (default: classes in turn, one row per class)")
    s.add_argument("--partial", default=None, metavar="IMAGE",
                   help="complete this PNG (the model's size): its top rows are kept, the rest sampled")
    s.add_argument("--keep-rows", type=int, default=None, help="rows of --partial to keep (default: half)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu")
    s.add_argument("--no-ema", action="store_true", help="the trained weights, not their moving average")
    s.add_argument("--naive", action="store_true", help="the naive sampler (one forward pass per sub-pixel)")
    s.set_defaults(run=lambda args, extra: sample(args))

    e = commands.add_parser("eval", help="bits/dim of a checkpoint on a data set")
    e.add_argument("checkpoint", help="a checkpoint directory, or a run directory (its best, else last)")
    e.add_argument("--data", required=True, help="as for train")
    e.add_argument("--split", default="test", help="train | val (digits) | test (default test)")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--device", default="cpu")
    e.add_argument("--no-ema", action="store_true", help="the trained weights, not their moving average")
    e.set_defaults(run=lambda args, extra: evaluate(args))
