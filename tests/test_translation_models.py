"""Pix2Pix and CycleGAN: shapes, the PatchGAN's receptive field, every loss term against its
definition written out here, the image pool, and the trainer (a short run lowers the translation
error; resume is exact)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastgen
from fastgen.data import ImageDataset, PairedDataset, UnpairedDataset, edges_to_digits
from fastgen.models import CycleGAN, Pix2Pix
from fastgen.nn import InstanceNormAct
from fastgen.models.translation import PatchDiscriminator, default_patch_layers, patch_receptive_field
from fastgen.train import ImagePool, TranslationTrainConfig, TranslationTrainer, translation_error
from tests.conftest import assert_same_weights


def _images(n: int, channels: int = 1, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, size, size), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def _set(images: torch.Tensor, name: str) -> ImageDataset:
    return ImageDataset(images, None, 256, None, name)


def test_receptive_field_formula_and_default():
    assert [patch_receptive_field(k) for k in (1, 2, 3, 4)] == [16, 34, 70, 142]
    assert default_patch_layers(32) == 1 and default_patch_layers(64) == 1 and default_patch_layers(256) == 3


@pytest.mark.parametrize("layers", [1, 2])
def test_patch_outputs_see_only_their_receptive_field(layers):
    """One output reads exactly the inputs of its receptive field, as wide as the formula says.
    Instance norm's statistics span the whole image, so the field is the convolutions': the norms
    are replaced by their activation here."""
    torch.manual_seed(0)
    size = 48
    d = PatchDiscriminator(2, width=4, layers=layers).double().eval()
    for k, module in enumerate(d.body):
        if isinstance(module, InstanceNormAct):
            d.body[k] = torch.nn.LeakyReLU(0.2)
    x = torch.randn(1, 2, size, size, dtype=torch.float64, requires_grad=True)
    out = d(x)
    i, j = out.shape[2] // 2, out.shape[3] // 2
    (grad,) = torch.autograd.grad(out[0, 0, i, j], x)
    rows = grad.abs().sum((0, 1, 3)).nonzero().flatten()
    cols = grad.abs().sum((0, 1, 2)).nonzero().flatten()
    field = patch_receptive_field(layers)
    assert rows.max() - rows.min() + 1 == field and cols.max() - cols.min() + 1 == field
    with torch.no_grad():
        far = x.detach().clone()
        far[0, :, 0, 0] += 10.0  # the top-left corner: outside the middle patch's field
        assert torch.equal(d(far)[0, 0, i, j], out[0, 0, i, j].detach())


@pytest.mark.parametrize("size", [16, 32])
def test_unet_and_resnet_shapes(size):
    p = Pix2Pix(1, 3, 256, size, width=4)
    assert p.generator(torch.randn(2, 1, size, size)).shape == (2, 3, size, size)
    c = CycleGAN(1, 3, 256, size, width=4, blocks=1, identity_weight=0)
    assert c.generator_ab(torch.randn(2, 1, size, size)).shape == (2, 3, size, size)
    assert c.generator_ba(torch.randn(2, 3, size, size)).shape == (2, 1, size, size)


def test_unet_skip_connections_carry_fine_detail():
    """The last decoder block reads the first encoder block: an input pixel reaches the output
    through a path of two layers, so the output gradient near it is large compared with far away."""
    torch.manual_seed(0)
    g = Pix2Pix(1, 1, 256, 16, width=4, dropout=0).generator.double().eval()
    x = torch.randn(1, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(g(x)[0, 0, 8, 8], x)
    assert grad.abs().max() > 0 and grad[0, 0, 7:10, 7:10].abs().sum() > 0


def test_pix2pix_losses_match_their_definition():
    torch.manual_seed(0)
    model = Pix2Pix(1, 1, 256, 16, width=4, l1_weight=7.0)
    source, target = torch.rand(3, 1, 16, 16) * 2 - 1, torch.rand(3, 1, 16, 16) * 2 - 1
    (fake,) = model.fakes(source, target)
    real_logits = model.discriminator(torch.cat([source, target], 1))
    fake_logits = model.discriminator(torch.cat([source, fake], 1))
    expected_d = 0.5 * (-F.logsigmoid(real_logits).mean() - F.logsigmoid(-fake_logits).mean())
    torch.testing.assert_close(model.discriminator_loss(source, target, fake), expected_d)
    loss, parts = model.generator_loss(source, target, fake)
    expected_g = -F.logsigmoid(fake_logits).mean() + 7.0 * (fake - target).abs().mean()
    torch.testing.assert_close(loss, expected_g)
    torch.testing.assert_close(parts["l1"], (fake - target).abs().mean().detach())


def test_cyclegan_losses_match_their_definition():
    """Least-squares adversarial terms, cycle terms through the other generator, and identity terms
    in which each generator is fed images of its own target domain (G: A -> B gets b)."""
    torch.manual_seed(0)
    model = CycleGAN(1, 1, 256, 16, width=4, blocks=1, cycle_weight=3.0, identity_weight=0.25)
    G, Fn, DA, DB = model.generator_ab, model.generator_ba, model.discriminator_a, model.discriminator_b
    a, b = torch.rand(2, 1, 16, 16) * 2 - 1, torch.rand(2, 1, 16, 16) * 2 - 1
    fake_a, fake_b = model.fakes(a, b)
    torch.testing.assert_close(fake_b, G(a))
    torch.testing.assert_close(fake_a, Fn(b))
    loss, parts = model.generator_loss(a, b, fake_a, fake_b)
    adversarial = ((DB(G(a)) - 1) ** 2).mean() + ((DA(Fn(b)) - 1) ** 2).mean()
    cycle = (Fn(G(a)) - a).abs().mean() + (G(Fn(b)) - b).abs().mean()
    identity = (G(b) - b).abs().mean() + (Fn(a) - a).abs().mean()
    torch.testing.assert_close(loss, adversarial + 3.0 * cycle + 0.25 * 3.0 * identity)
    torch.testing.assert_close(parts["identity"], identity.detach())
    d = model.discriminator_loss(a, b, fake_a, fake_b)
    expected_d = (0.5 * ((DA(a) - 1) ** 2).mean() + 0.5 * (DA(fake_a) ** 2).mean()
                  + 0.5 * ((DB(b) - 1) ** 2).mean() + 0.5 * (DB(fake_b) ** 2).mean())
    torch.testing.assert_close(d, expected_d)


def test_cyclegan_without_identity_and_refusals():
    model = CycleGAN(1, 3, 256, 16, width=4, blocks=1, identity_weight=0)
    a, b = torch.rand(1, 1, 16, 16), torch.rand(1, 3, 16, 16)
    assert "identity" not in model.generator_loss(a, b, *model.fakes(a, b))[1]
    with pytest.raises(ValueError, match="identity_weight=0"):
        CycleGAN(1, 3, 256, 16)
    with pytest.raises(ValueError, match="multiple of 4"):
        CycleGAN(1, 1, 256, 18)
    with pytest.raises(ValueError, match="power of two"):
        Pix2Pix(1, 1, 256, 24)
    with pytest.raises(ValueError, match="source_channels"):
        Pix2Pix(2, 1, 256, 16)
    with pytest.raises(ValueError, match="loss must be one of"):
        Pix2Pix(1, 1, 256, 16, loss="wasserstein")
    with pytest.raises(ValueError, match="direction"):
        Pix2Pix(1, 1, 256, 16, width=4).translate(_images(1), "backward")
    with pytest.raises(ValueError, match=r"patch_layers=3 leaves no patch of 16x16 images to judge \(at most 2\)"):
        CycleGAN(1, 1, 256, 16, patch_layers=3)
    Pix2Pix(1, 1, 256, 16, width=4, patch_layers=2).discriminate(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16))


def test_translate_checks_images_and_is_deterministic_in_eval_mode():
    model = Pix2Pix(1, 1, 256, 16, width=4)
    x = _images(3)
    out = model.translate(x, batch_size=2)
    assert out.shape == (3, 1, 16, 16) and out.dtype == torch.long and torch.equal(out, model.translate(x))
    assert model.training  # translate restores the training flag
    assert not torch.equal(model.translate(x, stochastic=True), model.translate(x, stochastic=True))
    with pytest.raises(ValueError, match=r"source images must be \(N, 1, 16, 16\)"):
        model.translate(_images(1, 3))
    with pytest.raises(ValueError, match="integer levels"):
        model.translate(torch.rand(1, 1, 16, 16))


def test_image_pool_keeps_history_and_its_state():
    torch.manual_seed(0)
    pool = ImagePool(4)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool(first), first)  # filling: returned as is
    mixed = pool(torch.full((64, 1, 1, 1), 9.0))
    old = (mixed != 9).sum().item()
    assert 0 < old <= 4 and len(pool.images) == 4  # about half are swapped for stored ones, each at most once
    assert set(mixed.flatten().tolist()) <= {0.0, 1.0, 2.0, 3.0, 9.0}
    copy = ImagePool(4)
    copy.load_state_dict(pool.state_dict())
    state = torch.get_rng_state()
    a = pool(torch.full((8, 1, 1, 1), 5.0))
    torch.set_rng_state(state)
    assert torch.equal(copy(torch.full((8, 1, 1, 1), 5.0)), a)
    assert torch.equal(ImagePool(0)(first), first)
    with pytest.raises(ValueError, match="pool size"):
        ImagePool(-1)
    with pytest.raises(ValueError, match="holds up to 4"):
        ImagePool(3).load_state_dict(pool.state_dict())


def _paired(n: int = 24, size: int = 16) -> PairedDataset:
    target = _images(n, 1, size, seed=1)
    source = 255 - target  # a translation the U-Net can learn quickly
    return PairedDataset(_set(source, "src"), _set(target, "tgt"), "toy-pairs")


def _unpaired(size: int = 16) -> UnpairedDataset:
    a, b = _images(20, 1, size, seed=2), _images(16, 1, size, seed=3)
    return UnpairedDataset(_set(a, "a"), _set(b, "b"), "toy-unpaired", a_in_b=_set(255 - a, "a in b"),
                           b_in_a=_set(255 - b, "b in a"))


def test_learning_rate_schedule(tmp_path):
    cfg = TranslationTrainConfig(epochs=4, batch_size=8, lr=1e-3, decay_from=0.5, progress=False, grid_samples=0)
    trainer = TranslationTrainer(Pix2Pix(1, 1, 256, 16, width=4), _paired(), str(tmp_path), cfg)
    total = 4 * trainer.steps_per_epoch
    assert trainer.learning_rate(0) == 1e-3 and trainer.learning_rate(total // 2 - 1) == 1e-3
    assert trainer.learning_rate(total // 2) == pytest.approx(1e-3)
    assert trainer.learning_rate(total - 1) == pytest.approx(1e-3 / (total / 2))
    assert trainer.learning_rate(3 * total // 4) == pytest.approx(0.5e-3)


def test_batches_cover_each_domain_and_wrap(tmp_path):
    cfg = TranslationTrainConfig(epochs=1, batch_size=8, progress=False, grid_samples=0)
    trainer = TranslationTrainer(CycleGAN(1, 1, 256, 16, width=4, blocks=1), _unpaired(), str(tmp_path), cfg)
    assert trainer.steps_per_epoch == 3  # ceil(20 / 8)
    a = torch.cat([trainer.batch_indices(0, k)[0] for k in range(3)])
    b = torch.cat([trainer.batch_indices(0, k)[1] for k in range(3)])
    assert set(a.tolist()) == set(range(20)) and set(b.tolist()) == set(range(16))
    assert not torch.equal(trainer.batch_indices(0, 0)[0], trainer.batch_indices(1, 0)[0])


def test_pix2pix_training_lowers_the_error_and_writes_a_grid(tmp_path):
    data = edges_to_digits("val", size=16).subset(torch.arange(32))
    torch.manual_seed(0)
    model = Pix2Pix(1, 1, 256, 16, width=8, l1_weight=100.0)
    before = translation_error(model, data)
    cfg = TranslationTrainConfig(epochs=6, batch_size=8, lr=2e-3, progress=False, grid_samples=3)
    history = TranslationTrainer(model, data, str(tmp_path), cfg, val_data=data).fit()
    assert history.val_error[-1] < 0.6 * before
    assert (tmp_path / "samples" / "epoch_006.png").is_file()
    loaded = fastgen.load(str(tmp_path / "last"))
    assert isinstance(loaded, Pix2Pix) and torch.equal(loaded.translate(data.source.images), model.translate(
        data.source.images))


def test_trainer_refuses_the_wrong_data(tmp_path):
    with pytest.raises(TypeError, match="PairedDataset"):
        TranslationTrainer(Pix2Pix(1, 1, 256, 16, width=4), _unpaired(), str(tmp_path))
    with pytest.raises(TypeError, match="UnpairedDataset"):
        TranslationTrainer(CycleGAN(1, 1, 256, 16, width=4, blocks=1), _paired(), str(tmp_path))
    with pytest.raises(ValueError, match=r"source images of shape \(1, 32, 32\)"):
        TranslationTrainer(Pix2Pix(1, 1, 256, 32, width=4), _paired(), str(tmp_path))
    with pytest.raises(ValueError, match="pool_size=5: pix2pix's discriminator judges each translation"):
        TranslationTrainer(Pix2Pix(1, 1, 256, 16, width=4), _paired(), str(tmp_path),
                           TranslationTrainConfig(pool_size=5))


def test_resume_applies_new_betas_and_refuses_other_domains(tmp_path):
    cfg = dict(epochs=1, batch_size=8, progress=False, grid_samples=0)
    TranslationTrainer(CycleGAN(1, 1, 256, 16, width=4, blocks=1), _unpaired(), str(tmp_path),
                       TranslationTrainConfig(**cfg)).fit()
    resumed = TranslationTrainer(CycleGAN(1, 1, 256, 16, width=4, blocks=1), _unpaired(), str(tmp_path),
                                 TranslationTrainConfig(**cfg, betas=(0.9, 0.99)))
    with pytest.warns(UserWarning, match="betas changes"):
        resumed.resume()
    assert all(g["betas"] == (0.9, 0.99) for opt in (resumed.opt_g, resumed.opt_d) for g in opt.param_groups)
    fewer = _unpaired()
    fewer = UnpairedDataset(fewer.a, fewer.b.subset(torch.arange(12)), "fewer")
    with pytest.raises(ValueError, match=r"domains of \[20, 16\] images, this data has \[20, 12\]"):
        TranslationTrainer(CycleGAN(1, 1, 256, 16, width=4, blocks=1), fewer, str(tmp_path),
                           TranslationTrainConfig(**cfg)).resume()


@pytest.mark.parametrize("kind", ["pix2pix", "cyclegan"])
def test_resume_is_exact(tmp_path, kind):
    """Killed after a mid-epoch checkpoint and resumed, a run ends with the weights of the
    uninterrupted one, bit for bit (the pool's images and the RNG included)."""
    def make():
        torch.manual_seed(0)
        if kind == "pix2pix":
            return Pix2Pix(1, 1, 256, 16, width=4), _paired()
        return CycleGAN(1, 1, 256, 16, width=4, blocks=1), _unpaired()

    cfg = dict(epochs=2, batch_size=8, progress=False, grid_samples=0, checkpoint_every=2,
               pool_size=0 if kind == "pix2pix" else 6)
    model, data = make()
    TranslationTrainer(model, data, str(tmp_path / "whole"), TranslationTrainConfig(**cfg)).fit()
    model, data = make()
    interrupted = TranslationTrainer(model, data, str(tmp_path / "part"), TranslationTrainConfig(**cfg))
    interrupted.save = _stop_after(interrupted.save, calls=2)  # dies right after its 2nd checkpoint (step 4)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    model, data = make()
    TranslationTrainer(model, data, str(tmp_path / "part"), TranslationTrainConfig(**cfg)).fit(resume=True)
    assert_same_weights(fastgen.load(str(tmp_path / "whole" / "last")).state_dict(),
                        fastgen.load(str(tmp_path / "part" / "last")).state_dict())


def _stop_after(save, calls: int):
    count = [0]

    def wrapped(*args, **kwargs):
        save(*args, **kwargs)
        count[0] += 1
        if count[0] == calls:
            raise KeyboardInterrupt

    return wrapped
