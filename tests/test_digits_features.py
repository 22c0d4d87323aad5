"""The digits feature network of FID-digits: accuracy, determinism, the cache, refused images.

One real training per session (the ``trained`` fixture) and one more for determinism; the cache
tests replace the training by a copy of ``trained`` and count the calls."""
from __future__ import annotations

import copy
import re

import pytest
import safetensors
import safetensors.torch
import torch

import fastgen.metrics.digits_features as dn
from fastgen.data.digits import digits
from fastgen.metrics.features import levels_to_unit


@pytest.fixture(scope="module")
def trained() -> dn.DigitsFeatureNetwork:
    return dn.train_digits_network()


def test_accuracy_features_and_logits(trained):
    test = digits("test")
    features, logits = trained(levels_to_unit(test.images, 17))
    assert features.shape == (360, trained.feature_dim) and features.dtype == torch.float32
    assert logits.shape == (360, 10)
    assert torch.isfinite(features).all() and torch.isfinite(logits).all()
    accuracy = (logits.argmax(1) == test.labels).double().mean().item()
    assert accuracy >= 0.95
    assert accuracy == pytest.approx(trained.test_accuracy)
    assert trained.name == f"digits-cnn-{dn.recipe_hash()[:8]}"
    assert re.fullmatch(r"digits-cnn-[0-9a-f]{8}", trained.name)
    assert (trained.channels, trained.image_size, trained.n_classes) == ((1,), (8, 8), 10)
    assert not trained.training and not any(p.requires_grad for p in trained.parameters())
    # float64 images are read in float32
    f64, _ = trained(levels_to_unit(test.images[:5], 17).double())
    torch.testing.assert_close(f64, features[:5])


def test_training_is_deterministic_and_leaves_global_state(trained):
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    again = dn.train_digits_network()
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads
    want = trained.state_dict()
    got = again.state_dict()
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name


@pytest.fixture
def training(monkeypatch, trained):
    """The training replaced by a copy of ``trained``, with an empty memo; .calls counts trainings."""
    class Fake:
        calls = 0

        def __call__(self, seed=dn.DEFAULT_SEED, *, progress=False):
            self.calls += 1
            return copy.deepcopy(trained)

    fake = Fake()
    monkeypatch.setattr(dn, "train_digits_network", fake)
    monkeypatch.setattr(dn, "_MEMO", {})
    return fake


def _no_training(*args, **kwargs):
    raise AssertionError("trained although the network was cached")


def _equal_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_cache_writes_once_then_loads(tmp_path, monkeypatch, training, trained):
    net = dn.digits_network(cache_dir=tmp_path)
    assert training.calls == 1
    key = dn.recipe_hash()
    path = tmp_path / f"digits-network-{key[:16]}.safetensors"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["hash"] == key and meta["recipe_version"] == str(dn.RECIPE_VERSION)
    assert float(meta["test_accuracy"]) == pytest.approx(trained.test_accuracy, abs=1e-6)

    # the memo: no training, not even a read of the file; each call gets its own copy
    load = dn._load
    monkeypatch.setattr(dn, "_load", _no_training)
    again = dn.digits_network(cache_dir=tmp_path)
    assert training.calls == 1 and again is not net and _equal_weights(again, net)
    monkeypatch.setattr(dn, "_load", load)

    # a new process (memo cleared): loaded from the file
    monkeypatch.setattr(dn, "_MEMO", {})
    monkeypatch.setattr(dn, "train_digits_network", _no_training)
    loaded = dn.digits_network(cache_dir=tmp_path)
    assert _equal_weights(loaded, trained) and loaded.name == trained.name
    assert loaded.test_accuracy == pytest.approx(trained.test_accuracy, abs=1e-6)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_changed_hash_trains_again(tmp_path, monkeypatch, training):
    dn.digits_network(cache_dir=tmp_path)
    monkeypatch.setitem(dn.RECIPE, "epochs", dn.RECIPE["epochs"] + 1)
    monkeypatch.setattr(dn, "_MEMO", {})
    net = dn.digits_network(cache_dir=tmp_path)
    assert training.calls == 2
    assert len(list(tmp_path.glob("digits-network-*.safetensors"))) == 2
    assert net.name == f"digits-cnn-{dn.recipe_hash()[:8]}"


def test_retrain_ignores_memo_and_file(tmp_path, training):
    dn.digits_network(cache_dir=tmp_path)
    dn.digits_network(cache_dir=tmp_path, retrain=True)
    assert training.calls == 2 and len(list(tmp_path.iterdir())) == 1


def _corrupt(kind: str, path, trained) -> None:
    tensors = {k: v.clone() for k, v in trained.state_dict().items()}
    meta = {"hash": dn.recipe_hash(), "test_accuracy": "0.99", "recipe_version": "1"}
    if kind == "garbage":
        path.write_bytes(b"not a safetensors file")
        return
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:200])
        return
    if kind == "wrong keys":
        tensors["extra.weight"] = torch.zeros(3)
    elif kind == "wrong shape":
        tensors["fc1.weight"] = torch.zeros(7, 7)
    elif kind == "wrong hash":
        meta["hash"] = "0" * 64
    path.write_bytes(safetensors.torch.save(tensors, meta))


@pytest.mark.parametrize("kind", ["garbage", "truncated", "wrong keys", "wrong shape", "wrong hash"])
def test_corrupted_file_is_retrained_with_a_warning(tmp_path, monkeypatch, training, trained, kind):
    dn.digits_network(cache_dir=tmp_path)
    (path,) = tmp_path.iterdir()
    _corrupt(kind, path, trained)
    monkeypatch.setattr(dn, "_MEMO", {})
    with pytest.warns(UserWarning, match="unreadable or not this network"):
        net = dn.digits_network(cache_dir=tmp_path)
    assert training.calls == 2 and _equal_weights(net, trained)
    # written over: the next process loads it
    monkeypatch.setattr(dn, "_MEMO", {})
    monkeypatch.setattr(dn, "train_digits_network", _no_training)
    assert _equal_weights(dn.digits_network(cache_dir=tmp_path), trained)


def test_unwritable_cache_warns_and_returns_the_network(tmp_path, training, trained):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # a directory under a file cannot be made, even by root
    with pytest.warns(UserWarning, match="cannot write"):
        net = dn.digits_network(cache_dir=blocker / "cache")
    assert training.calls == 1 and _equal_weights(net, trained)
    assert list(tmp_path.iterdir()) == [blocker]


def test_cache_directory_order(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGEN_CACHE_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dn.cache_directory(tmp_path / "arg") == tmp_path / "arg"
    assert dn.cache_directory() == tmp_path / "env"
    monkeypatch.delenv("FASTGEN_CACHE_DIR")
    assert dn.cache_directory() == tmp_path / "xdg" / "fastgen"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert dn.cache_directory() == tmp_path / "home" / ".cache" / "fastgen"


@pytest.mark.parametrize("images, message", [
    (torch.rand(2, 1, 28, 28), "reads 8x8 images, got 28x28"),
    (torch.rand(2, 3, 8, 8), "reads images with 1 channels, got 3"),
    (torch.full((2, 1, 8, 8), 16.0), r"must be in \[0, 1\]"),
    (torch.full((2, 1, 8, 8), -0.5), r"must be in \[0, 1\]"),
    (torch.full((2, 1, 8, 8), float("nan")), r"must be in \[0, 1\]"),
    (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), "must be floats in"),
    (torch.rand(1, 8, 8), r"must be a \(N, C, H, W\) tensor"),
])
def test_bad_images_are_refused(trained, images, message):
    with pytest.raises(ValueError, match=message):
        trained(images)
