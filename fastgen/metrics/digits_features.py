"""The feature network of "FID-digits": a small CNN classifier of the bundled 8x8 digits, trained by
fastgen itself, deterministically, the first time it is needed, and cached.

There is no published feature network for 8x8 digits, so fastgen makes one that any machine can
remake: the training recipe below is fixed, and the network is cached under the user's cache
directory in ``digits-network-<hash16>.safetensors``, where the hash (sha256) covers this file's
source, the recipe's hyper-parameters and the bytes of the training images and labels (and not the
torch version or the machine). Its name, ``digits-cnn-<first 8 hex of the hash>``, goes next to
every figure it computes, so two figures with the same name come from the same recipe and data.

Architecture (input (N, 1, 8, 8) floats in [0, 1], i.e. levels / 16)::

    conv 3x3, 1 -> 32, pad 1, ReLU
    conv 3x3, 32 -> 64, pad 1, ReLU
    max pool 2x2                      (64, 4, 4)
    flatten, linear 1024 -> 128       the features: the pre-activation of the hidden layer,
                                      standardised per unit over the training digits
    ReLU, linear 128 -> 10            the logits

The features are taken before the ReLU: they are closer to Gaussian (which the Frechet distance
assumes) and have no units that are exactly zero on a whole set of images, which would make the
covariance singular. (torch-fidelity's Inception features are post-activation, pooled; here the
hidden layer is the last layer before the classifier and its ReLU only cuts information away.)

Recipe (``RECIPE``): the 1257 images of the digits' train split, dequantised (uniform noise of
one level's width, +-1/32, clipped to [0, 1], which keeps every value on its own level); weights
initialised like torch's defaults but from an explicit ``torch.Generator(seed)``, which also draws
the batch order (a fresh permutation each epoch) and the noise; Adam (lr 1e-3, betas (0.9, 0.999),
eps 1e-8, written out here as torch's single-tensor Adam computes it), batches of 64, 30 epochs,
cross-entropy; float32 on the CPU and one thread, so the weights do not depend on the thread count
(every op it runs is deterministic on one CPU thread; see ``_deterministic_cpu``).

One-pixel random shifts were tried (in an exploratory script, seeds 0-2) and did not help: the
digits fill their 8x8 frame and a shift loses a row of ink; test accuracy 0.978-0.992 with shifts
against 0.992 for each seed with dequantisation alone.

Measured (2-core CPU, torch 2.13, one training thread, machine otherwise idle): training takes
4.5-5.3 s (five runs; the 2 cores are shared with other work, so a busy machine takes longer) and
reaches 0.9917 accuracy on the 360 test images for seeds 0, 1 and 2 (seed 0: 0.9833 on the 180
validation images). Loading the cached network in a fresh process takes about 1 s, most of it
reading the digits to compute the hash. The cache file's metadata holds the hash, the test
accuracy measured when it was trained and ``RECIPE_VERSION``.

The same machine and torch build give bit-identical weights for the same seed. Another CPU (other
vector instructions) or torch build may round differently and give weights that differ in the last
bits, with the same accuracy; its cache file has the same name, so copying a cache directory
between machines carries the exact network along.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastgen.data.digits import LEVELS, digits
from fastgen.metrics.features import FeatureNetwork

#: Bumped by hand when the recipe changes in a way the hash would not see (it sees this file).
RECIPE_VERSION = 1

#: The training recipe's hyper-parameters (all part of the cache key).
RECIPE = {
    "channels": [32, 64],
    "hidden": 128,
    "epochs": 30,
    "batch_size": 64,
    "lr": 1e-3,
    "betas": [0.9, 0.999],
    "eps": 1e-8,
    "dequantise": True,
    "threads": 1,
    "dtype": "float32",
    "recipe_version": RECIPE_VERSION,
}

#: The seed ``digits_network`` trains with.
DEFAULT_SEED = 0

ENV_CACHE_DIR = "FASTGEN_CACHE_DIR"

# hash -> the network, so that repeated calls in one process neither retrain nor reread the file.
_MEMO: dict[str, DigitsFeatureNetwork] = {}


class DigitsFeatureNetwork(FeatureNetwork):
    """The digits CNN: features (N, 128) from its hidden layer (before the ReLU), logits (N, 10).

    Reads (N, 1, 8, 8) floats in [0, 1] (levels / 16, see ``fastgen.metrics.levels_to_unit``);
    float64 images are read in float32. Build a trained one with ``digits_network()``; a network
    built directly holds initial weights drawn from ``generator`` (a fixed one when None), never
    from the global random state.

    Attributes:
        key: the sha256 hex of the recipe, source and data it was trained from ("" if untrained).
        test_accuracy: its accuracy on the digits' test split, or None if not measured.
    """

    feature_dim = RECIPE["hidden"]
    n_classes = 10
    channels = (1,)
    image_size = (8, 8)

    def __init__(self, key: str = "", *, generator: torch.Generator | None = None,
                 channels: tuple[int, int] = tuple(RECIPE["channels"]), hidden: int = RECIPE["hidden"]):
        super().__init__()
        c1, c2 = channels
        # Constructing torch layers draws their default initialisation from the global random
        # state; fork it so that building a network leaves the caller's random stream alone.
        with torch.random.fork_rng(devices=[]):
            kw = dict(device="cpu", dtype=torch.float32)
            self.conv1 = nn.Conv2d(1, c1, 3, padding=1, **kw)
            self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, **kw)
            self.fc1 = nn.Linear(c2 * 16, hidden, **kw)
            self.fc2 = nn.Linear(hidden, self.n_classes, **kw)
        # The features are standardised per unit over the training digits (set after training):
        # raw pre-activations have norms near 90, which puts FID in the thousands and makes KID's
        # cubic kernel (x.y / D + 1)^3 ~ 10^5; standardised, both read on the scale of Inception's.
        self.register_buffer("feature_mean", torch.zeros(hidden))
        self.register_buffer("feature_std", torch.ones(hidden))
        self.feature_dim = hidden
        self.reset_parameters(torch.Generator().manual_seed(0) if generator is None else generator)
        self.test_accuracy: float | None = None
        self.set_key(key)

    def set_key(self, key: str) -> None:
        self.key = key
        self.name = f"digits-cnn-{key[:8]}" if key else "digits-cnn-untrained"

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """torch's default initialisation of each layer, drawn from ``generator``."""
        for layer in (self.conv1, self.conv2, self.fc1, self.fc2):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            bound = 1 / math.sqrt(layer.weight[0].numel())
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.to(self.fc1.weight.dtype)
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        hidden = self.fc1(x.flatten(1))
        return ((hidden - self.feature_mean) / self.feature_std).float(), self.fc2(F.relu(hidden))

    @torch.no_grad()
    def standardise_features(self, images: torch.Tensor) -> None:
        """Set the feature standardisation to the mean and standard deviation of ``images``."""
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(images.float())))), 2)
        hidden = self.fc1(x.flatten(1))
        self.feature_mean.copy_(hidden.mean(0))
        self.feature_std.copy_(hidden.std(0).clamp(min=1e-6))


# -- the key ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _train_split() -> tuple[torch.Tensor, torch.Tensor]:
    data = digits("train")
    return data.images.contiguous(), data.labels.contiguous()


def _source_bytes() -> bytes:
    # Line endings normalised, so a checkout with CRLF line endings has the same key.
    return Path(__file__).read_bytes().replace(b"\r\n", b"\n")


def recipe_hash(seed: int = DEFAULT_SEED) -> str:
    """sha256 hex over this module's source, ``RECIPE`` with ``seed``, and the training images and
    labels (as little-endian bytes with their shapes)."""
    images, labels = _train_split()
    recipe = json.dumps({**RECIPE, "seed": seed}, sort_keys=True).encode()
    parts = [b"fastgen digits-network", _source_bytes(), recipe,
             json.dumps([list(images.shape), list(labels.shape)]).encode(),
             images.numpy().astype("u1").tobytes(), labels.numpy().astype("<i8").tobytes()]
    h = hashlib.sha256()
    for part in parts:  # length-prefixed, so no two different part lists give the same stream
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


# -- training --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _deterministic_cpu(threads: int):
    """One intra-op thread (so the reductions' order does not depend on the machine's core count),
    gradients on, whatever the caller's modes; the caller's thread count back after.

    Every CPU op the training runs is deterministic on one thread, so it needs no
    ``torch.use_deterministic_algorithms(True)``; that flag guards CUDA kernels, and its first
    call imports torch._inductor (1.6 s here).
    """
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        torch.set_num_threads(old_threads)


class _Adam:
    """Adam (Kingma and Ba), written out in the order of torch's single-tensor Adam.

    Written here rather than taken from torch.optim so that this file states the whole recipe,
    whatever a torch release changes in its optimizers (the cache key leaves torch's version out);
    and torch.optim's first use imports torch._dynamo (1.6 s, longer than a third of the training).
    """

    def __init__(self, params: list[torch.Tensor], lr: float, betas: tuple[float, float], eps: float):
        self.params, self.lr, self.betas, self.eps, self.steps = params, lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self) -> None:
        """One update from the parameters' gradients, which it then clears."""
        self.steps += 1
        beta1, beta2 = self.betas
        correction1, correction2 = 1 - beta1 ** self.steps, 1 - beta2 ** self.steps
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / math.sqrt(correction2)).add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / correction1)
            p.grad = None


@torch.no_grad()
def digits_test_accuracy(network: DigitsFeatureNetwork) -> float:
    """The network's accuracy on the digits' test split (360 images)."""
    test = digits("test")
    device = network.fc1.weight.device
    _, logits = network(test.images.float().div(LEVELS - 1).to(device))
    return (logits.argmax(1).cpu() == test.labels).double().mean().item()


def train_digits_network(seed: int = DEFAULT_SEED, *, progress: bool = False) -> DigitsFeatureNetwork:
    """Train the digits CNN by ``RECIPE`` from ``seed`` (about 5 s on one CPU core); deterministic.

    Returns it in eval mode with gradients off, its ``key`` set to ``recipe_hash(seed)`` and its
    ``test_accuracy`` measured. ``progress`` prints the loss of each epoch to stderr.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    key = recipe_hash(seed)
    images, labels = _train_split()
    r = RECIPE
    with _deterministic_cpu(r["threads"]):
        generator = torch.Generator().manual_seed(seed)
        network = DigitsFeatureNetwork(key, generator=generator, channels=tuple(r["channels"]), hidden=r["hidden"])
        network.train()
        x_all = images.to(torch.float32) / (LEVELS - 1)
        optimizer = _Adam(list(network.parameters()), r["lr"], tuple(r["betas"]), r["eps"])
        n = len(x_all)
        for epoch in range(r["epochs"]):
            order = torch.randperm(n, generator=generator, device="cpu")
            total = 0.0
            for start in range(0, n, r["batch_size"]):
                index = order[start:start + r["batch_size"]]
                x = x_all[index]
                if r["dequantise"]:
                    noise = torch.rand(x.shape, generator=generator, dtype=torch.float32, device="cpu") - 0.5
                    x = (x + noise / (LEVELS - 1)).clamp_(0.0, 1.0)
                _, logits = network.features_and_logits(x)
                loss = F.cross_entropy(logits, labels[index])
                loss.backward()
                optimizer.step()
                if progress:
                    total += loss.item() * len(index)
            if progress:
                print(f"digits-cnn: epoch {epoch + 1}/{r['epochs']} loss {total / n:.4f}", file=sys.stderr)
        network.eval().requires_grad_(False)
        network.standardise_features(x_all)
        network.test_accuracy = digits_test_accuracy(network)
    if progress:
        print(f"digits-cnn: test accuracy {network.test_accuracy:.4f}", file=sys.stderr)
    return network


# -- the cache -------------------------------------------------------------------------------------


def cache_directory(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else $FASTGEN_CACHE_DIR, else $XDG_CACHE_HOME/fastgen, else ~/.cache/fastgen."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "fastgen"
    return Path.home() / ".cache" / "fastgen"


def cache_file(directory: Path, key: str) -> Path:
    return directory / f"digits-network-{key[:16]}.safetensors"


def _load(path: Path, key: str) -> DigitsFeatureNetwork:
    """The network in ``path``; raises ValueError (or the reader's error) if it is not the one of ``key``."""
    import safetensors  # here: `import fastgen` needs only torch and numpy

    with safetensors.safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    if metadata.get("hash") != key:
        raise ValueError(f"its hash is {metadata.get('hash')!r}, expected {key!r}")
    network = DigitsFeatureNetwork(key)
    expected = network.state_dict()
    if set(tensors) != set(expected):
        raise ValueError(f"it holds tensors {sorted(tensors)}, expected {sorted(expected)}")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape or tensor.dtype != torch.float32:
            raise ValueError(f"{name} is {tensor.dtype} {tuple(tensor.shape)}, expected float32 "
                             f"{tuple(expected[name].shape)}")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name} holds non-finite values")
    network.load_state_dict(tensors)
    network.eval().requires_grad_(False)
    accuracy = metadata.get("test_accuracy")
    network.test_accuracy = float(accuracy) if accuracy is not None else None
    return network


def _save(network: DigitsFeatureNetwork, path: Path, key: str) -> None:
    """Write atomically: a temporary file in the same directory, then ``os.replace``."""
    metadata = {"hash": key, "name": network.name, "test_accuracy": f"{network.test_accuracy:.6f}",
                "recipe_version": str(RECIPE_VERSION), "feature_dim": str(network.feature_dim),
                "trained_with_torch": torch.__version__}
    import safetensors.torch

    data = safetensors.torch.save({k: v.contiguous() for k, v in network.state_dict().items()}, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache file is readable like any other
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def digits_network(*, cache_dir: str | os.PathLike | None = None, retrain: bool = False,
                   progress: bool = False) -> DigitsFeatureNetwork:
    """The trained digits feature network: from this process's memo, else from the cache file,
    else trained (about 5 s, once) and written to the cache.

    Args:
        cache_dir: where the cache file lives; None: $FASTGEN_CACHE_DIR, else
            $XDG_CACHE_HOME/fastgen, else ~/.cache/fastgen.
        retrain: train even if the memo or a cache file has the network, and write it over.
        progress: say on stderr that it trains, and print the loss of each epoch.

    A cache file that cannot be read or is not this network is trained over, with a warning; a
    cache directory that cannot be written is warned about and the trained network returned.
    Each call returns its own copy (in eval mode, gradients off), so moving or changing it leaves
    the memo alone.
    """
    key = recipe_hash(DEFAULT_SEED)
    if not retrain and key in _MEMO:
        return copy.deepcopy(_MEMO[key])
    path = cache_file(cache_directory(cache_dir), key)
    network = None
    if not retrain and path.exists():
        try:
            network = _load(path, key)
        except Exception as error:  # noqa: BLE001 - any unreadable cache file is retrained over
            warnings.warn(f"the digits feature network's cache file {path} is unreadable or not this "
                          f"network ({type(error).__name__}: {error}); training it again", stacklevel=2)
    if network is None:
        if progress:
            print(f"digits-cnn: training the digits feature network (once; cached as {path})", file=sys.stderr)
        network = train_digits_network(DEFAULT_SEED, progress=progress)
        network.set_key(key)
        try:
            _save(network, path, key)
        except OSError as error:
            warnings.warn(f"cannot write the digits feature network's cache file {path} "
                          f"({type(error).__name__}: {error}); using it uncached, it will be trained "
                          f"again in the next process", stacklevel=2)
    _MEMO[key] = network
    return copy.deepcopy(network)
