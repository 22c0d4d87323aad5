"""Fuzzing of the sampler ops (``torch.ops.fastgen.sample_program``, ``sample_program_block``,
``sample_program_describe``): random changes to a valid program's ints and tensors and to the
call's other arguments. Each call must return or raise; this process dying by a signal is the
failure its caller (tests/test_program.py, ``make fuzz``) detects. An exception that is not a
RuntimeError or ValueError counts as unexplained.

    python -m tests.fuzz_sample_program --cases 1000 --seed 0 --out bench/results/fuzz-sample-program.txt
"""
from __future__ import annotations

import argparse
import random
import sys
import time

import torch

import fastgen  # noqa: F401  (registers the ops)
from fastgen.models import GatedPixelCNN, PixelCNN, PixelCNNpp
from fastgen.sampling import draw_noise, partial_image

OPS = ("sample_program", "sample_program_block", "sample_program_describe")
INTERESTING = [-(2 ** 62), -(2 ** 31), -2, -1, 0, 1, 2, 3, 7, 16, 255, 256, 65536, 2 ** 31, 2 ** 62]


def programs():
    torch.manual_seed(0)
    out = []
    for model, cond in [(PixelCNN(3, 4, (4, 5), hidden_channels=6, n_layers=1, kernel_size=3, n_classes=2),
                         torch.tensor([0, 1])),
                        (GatedPixelCNN(1, 3, (4, 5), hidden_channels=4, n_layers=2, kernel_size=3, cond_channels=2),
                         torch.randn(2, 2, 4, 5)),
                        (PixelCNNpp(1, 5, 4, nr_resnet=1, nr_filters=4, nr_mix=2, dropout=0.0), None)]:
        model.eval()
        with torch.no_grad():
            program = model.sampling_program(model.prepare_cond(cond, 2))
        image, known = partial_image(None, 2, (model.in_channels, *model.image_size), model.levels,
                                     torch.device("cpu"))
        noise = draw_noise(2, model.noise_shape, generator=torch.Generator().manual_seed(0))
        out.append((*program.encode(), image, known, noise))
    return out


def bad_tensor(t: torch.Tensor, rng: random.Random) -> torch.Tensor:
    choice = rng.randrange(8)
    if choice == 0:
        return t.reshape(-1)
    if choice == 1:
        return t[..., :0] if t.dim() else t
    if choice == 2:
        return t.double() if t.dtype != torch.float64 else t.float()
    if choice == 3:
        return t.to(torch.int64)
    if choice == 4:
        return torch.empty(0)
    if choice == 5:
        return t.unsqueeze(0)
    if choice == 6:
        return torch.full_like(t, float("nan")) if t.is_floating_point() else t
    return t.expand(2, *t.shape) if t.dim() < 5 else t


def mutate(case, rng: random.Random):
    tensors, ints, image, known, noise = case
    tensors, ints = list(tensors), list(ints)
    for _ in range(rng.randrange(1, 4)):
        what = rng.randrange(10)
        if what < 5:
            k = rng.randrange(len(ints))
            ints[k] = rng.choice(INTERESTING) if rng.random() < 0.5 else ints[k] + rng.choice([-1, 1])
        elif what == 5:
            cut = rng.randrange(len(ints))
            ints = ints[:cut] if rng.random() < 0.5 else ints + ints[cut:cut + rng.randrange(1, 5)]
        elif what == 6:
            k = rng.randrange(len(tensors))
            tensors[k] = bad_tensor(tensors[k], rng)
        elif what == 7:
            if rng.random() < 0.5 and len(tensors) > 1:
                tensors.pop(rng.randrange(len(tensors)))
            else:
                tensors.insert(rng.randrange(len(tensors) + 1), torch.randn(3))
        elif what == 8:
            image, known, noise = rng.choice([
                (image[:1], known, noise), (image, known[:, :, :1], noise), (image, known, noise[:, :1]),
                (image.float(), known, noise), (image, known.long(), noise), (image, known, noise.float()),
                (image.transpose(2, 3), known, noise), (image * 0 + 2 ** 40, known, noise),
                (image[:0], known[:0], noise[:0])])
        else:
            noise = noise.to("meta") if rng.random() < 0.3 else torch.full_like(noise, rng.choice([-1.0, 2.0, float("nan")]))
    return tensors, ints, image, known, noise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=200, help="mutated calls per op")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    cases = programs()
    counts = {op: {"cases": 0, "raised": 0, "returned": 0, "unexplained": 0} for op in OPS}
    unexplained = []
    start = time.time()
    for k in range(args.cases):
        for op in OPS:
            tensors, ints, image, known, noise = mutate(cases[k % len(cases)], rng)
            fn = getattr(torch.ops.fastgen, op)
            counts[op]["cases"] += 1
            try:
                if op == "sample_program_describe":
                    fn(tensors, ints)
                else:
                    fn(tensors, ints, image, known, noise, rng.random() < 0.5)
                counts[op]["returned"] += 1
            except (RuntimeError, ValueError, TypeError, NotImplementedError):
                counts[op]["raised"] += 1
            except Exception as e:  # noqa: BLE001  (anything else is a finding)
                counts[op]["unexplained"] += 1
                unexplained.append(f"{op}: {type(e).__name__}: {e}"[:300])
    lines = [f"fuzz of the sampler ops: seed {args.seed}, {time.time() - start:.0f} s, torch {torch.__version__}"]
    for op, c in counts.items():
        lines.append(f"{op}: cases {c['cases']}, raised {c['raised']}, returned {c['returned']}, "
                     f"unexplained {c['unexplained']}")
    total = sum(c["cases"] for c in counts.values())
    lines.append(f"total: cases {total}, crashes 0, unexplained {len(unexplained)}")
    lines += unexplained[:20]
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
