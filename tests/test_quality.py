"""Sample quality of models against a data split (fastgen.metrics.sample_quality), for every model
family, and the trainers' --eval-every: scores logged, the run's random state untouched."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch

from fastgen.data import digits
from fastgen.metrics import digits_network
from fastgen.metrics.quality import data_quality, sample_quality
from fastgen.models import DCGAN, VAE, GatedPixelCNN, PixelCNN, PixelCNNpp
from fastgen.train import GANTrainConfig, GANTrainer, TrainConfig, Trainer

FAMILIES = {
    "pixelcnn": lambda: PixelCNN(1, 17, 8, hidden_channels=8, n_layers=2, kernel_size=3, n_classes=10),
    "gated": lambda: GatedPixelCNN(1, 17, 8, hidden_channels=8, n_layers=2, kernel_size=3, n_classes=10),
    "pixelcnnpp": lambda: PixelCNNpp(1, 17, 8, nr_resnet=1, nr_filters=8, nr_mix=2),
    "vae": lambda: VAE(1, 17, 8, latent_dim=4, arch="conv", n_classes=10),
    "dcgan": lambda: DCGAN(1, 17, 8, latent_dim=8, width=8, n_classes=10),
}


@pytest.fixture(scope="module")
def network():
    return digits_network()


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_scored_and_the_report_says_against_what(family, network):
    torch.manual_seed(0)
    model = FAMILIES[family]()
    test = digits("test")
    report = sample_quality(model, test, n=150, network=network, batch_size=64, kid_subsets=5)
    assert report.n_samples == 150 and report.reference == "digits/test" and report.n_reference == 360
    assert report.network == network.name
    for key in ("fid", "kid", "kid_std", "is", "precision", "recall", "density", "coverage"):
        assert math.isfinite(report.scores[key]), key
    assert ("agreement" in report.scores) == (model.n_classes is not None)
    assert "150 samples against digits/test (360 images), features: digits-cnn-" in report.summary()
    again = sample_quality(model, test, n=150, network=network, batch_size=64, kid_subsets=5)
    assert again.scores == report.scores  # the samples come from the seed alone
    assert model.training  # the model's mode is restored


def test_the_floor_is_far_below_an_untrained_model(network):
    train, test = digits("train"), digits("test")
    floor = data_quality(train, test, network=network, kid_subsets=10)
    untrained = sample_quality(FAMILIES["dcgan"](), test, n=300, network=network, kid_subsets=10)
    assert floor.scores["fid"] < untrained.scores["fid"] / 10
    assert floor.scores["precision"] > 0.9 and floor.scores["recall"] > 0.9
    assert floor.scores["is"] > 8  # the classifier is sure and the classes balanced


def test_bad_requests_are_refused(network):
    model, test = FAMILIES["vae"](), digits("test")
    with pytest.raises(ValueError, match="metrics must be a comma-separated subset of fid,kid,is,pr"):
        sample_quality(model, test, metrics="fid,bpd", network=network)
    with pytest.raises(ValueError, match="n must be an integer of at least 2"):
        sample_quality(model, test, n=1, network=network)
    with pytest.raises(ValueError, match=r"makes images of shape \(3, 8, 8\), reference digits/test has \(1, 8, 8\)"):
        sample_quality(PixelCNN(3, 17, 8, hidden_channels=6, n_layers=1), test, network=network)
    with pytest.raises(ValueError, match="spatial conditioning map"):
        sample_quality(GatedPixelCNN(1, 17, 8, hidden_channels=8, n_layers=1, cond_channels=2), test,
                       network=network)
    with pytest.raises(ValueError, match=r"FID with digits-cnn-\w+ \(128 features\) needs more than 128 images"):
        sample_quality(model, test, metrics="fid", n=50, network=network)
    with pytest.raises(ValueError, match="precision/recall with k = 5 needs more than 5 images"):
        sample_quality(model, test, metrics="pr", n=5, network=network)
    with pytest.raises(ValueError, match=r"17 levels, reference digits/test \(binarized\) has 2"):
        sample_quality(model, digits("test", binarized=True), network=network)
    with pytest.raises(TypeError, match="model must be a fastgen model"):
        sample_quality(torch.nn.Linear(2, 2), test, network=network)


def _metrics(path: str) -> list[dict]:
    return [json.loads(line) for line in open(os.path.join(path, "metrics.jsonl"))]


def test_eval_every_logs_scores_and_leaves_the_run_unchanged(tmp_path, network):
    train, val = digits("train").subset(torch.arange(200)), digits("val")

    def run(name, eval_every):
        torch.manual_seed(0)
        model = GatedPixelCNN(1, 17, 8, hidden_channels=8, n_layers=2, kernel_size=3, dropout=0.3, n_classes=10)
        config = TrainConfig(epochs=2, batch_size=50, grid_samples=0, progress=False, eval_every=eval_every,
                             eval_samples=200, eval_metrics="fid,pr")
        Trainer(model, train, val, str(tmp_path / name), config).fit()
        return model

    plain, evaluated = run("plain", None), run("evaluated", 1)
    for a, b in zip(plain.parameters(), evaluated.parameters()):  # dropout draws from the global RNG
        assert torch.equal(a, b)
    epochs = [r for r in _metrics(str(tmp_path / "evaluated")) if "epoch" in r]
    assert len(epochs) == 2 and all(math.isfinite(r["quality/fid"]) and "quality/recall" in r for r in epochs)
    assert not any("quality/kid" in r for r in epochs)
    assert not any("quality/fid" in r for r in _metrics(str(tmp_path / "plain")))


def test_gan_eval_every_scores_against_its_eval_data(tmp_path, network):
    torch.manual_seed(0)
    model = DCGAN(1, 17, 8, latent_dim=8, width=8, n_classes=10)
    config = GANTrainConfig(epochs=2, batch_size=64, grid_samples=0, progress=False, eval_every=2,
                            eval_samples=200, eval_metrics="fid,is")
    GANTrainer(model, digits("train").subset(torch.arange(256)), str(tmp_path / "gan"), config,
               eval_data=digits("val")).fit()
    epochs = [r for r in _metrics(str(tmp_path / "gan")) if "epoch" in r]
    assert "quality/fid" not in epochs[0] and math.isfinite(epochs[1]["quality/fid"])
    assert math.isfinite(epochs[1]["quality/is"])
    with pytest.raises(ValueError, match="eval_every"):
        GANTrainConfig(eval_every=0)
    with pytest.raises(ValueError, match="metrics must be a comma-separated"):
        TrainConfig(eval_metrics="fid,nll")


def test_a_run_that_cannot_be_scored_stops_before_its_first_step(tmp_path):
    model = PixelCNN(1, 17, 8, hidden_channels=8, n_layers=1, kernel_size=3)
    config = TrainConfig(epochs=1, eval_every=1, eval_samples=100, eval_metrics="fid", progress=False)
    with pytest.raises(ValueError, match=r"needs more than 128 images on each side \(a covariance of fewer is singular\), got 100 samples"):
        Trainer(model, digits("train"), digits("val"), str(tmp_path / "run"), config)
    assert not (tmp_path / "run").exists()
