"""Translation data: paired and unpaired sets, their folder loaders on tiny PNGs the tests write,
and the two bundled digit tasks with known ground truth."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from fastgen.data import (DataError, ImageDataset, PairedDataset, UnpairedDataset, digits, edges_to_digits, ink_edges,
                          invert_ink, inverted_digits, load, load_pairs, load_unpaired, uninvert_ink)

pytest.importorskip("sklearn")
Image = pytest.importorskip("PIL.Image")


def save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)


def rgb(seed, h, w):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def chw(pixels):
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)


@pytest.fixture(scope="module")
def edges_val():
    return edges_to_digits("val")


@pytest.fixture(scope="module")
def inverted_val():
    return inverted_digits("val")


# -- digits(size=...) --------------------------------------------------------------------------------
class TestResizedDigits:
    def test_shape_levels_and_range(self):
        d = digits("val", size=12)
        assert d.shape == (1, 12, 12) and d.levels == 256 and d.images.dtype == torch.uint8 and len(d) == 180
        assert int(d.images.max()) == 255 and int(d.images.min()) == 0 and d.n_classes == 10
        assert torch.equal(d.labels, digits("val").labels)

    def test_is_bilinear_interpolation_on_the_byte_scale(self):
        small, big = digits("val"), digits("val", size=32)
        expected = torch.nn.functional.interpolate(small.images.double() * 255 / 16, size=(32, 32), mode="bilinear",
                                                   align_corners=False).round().to(torch.uint8)
        assert torch.equal(big.images, expected)
        assert torch.equal(digits("val", size=8).images, (small.images.double() * 255 / 16).round().to(torch.uint8))

    def test_size_none_is_unchanged_and_binarized_thresholds_at_128(self):
        d = digits("val", size=None)
        assert d.shape == (1, 8, 8) and d.levels == 17 and d.name == "digits/val"
        assert torch.equal(d.images, digits("val").images)
        big, binary = digits("val", size=16), digits("val", binarized=True, size=16)
        assert binary.levels == 2 and torch.equal(binary.images, (big.images >= 128).to(torch.uint8))

    @pytest.mark.parametrize("size", [7, 0, -3, 16.0, True, "32"])
    def test_bad_size(self, size):
        with pytest.raises(ValueError, match=r"size must be an integer >= 8"):
            digits("val", size=size)


# -- the data set classes ------------------------------------------------------------------------------
def images(n, c, h, w, value=0):
    return ImageDataset(torch.full((n, c, h, w), value, dtype=torch.uint8), None, 256)


class TestPairedDataset:
    def test_items_labels_and_subset(self):
        source = ImageDataset(torch.arange(3 * 4 * 5).view(3, 1, 4, 5).to(torch.uint8), torch.tensor([2, 0, 1]), 256)
        target = ImageDataset(torch.zeros(3, 3, 4, 5, dtype=torch.uint8), None, 256)
        pairs = PairedDataset(source, target, "p")
        assert len(pairs) == 3 and torch.equal(pairs.labels, torch.tensor([2, 0, 1]))
        s, t = pairs[1]
        assert s.dtype == torch.uint8 and s.shape == (1, 4, 5) and t.shape == (3, 4, 5)
        assert torch.equal(s, source.images[1])
        sub = pairs.subset(torch.tensor([2, 0]))
        assert len(sub) == 2 and sub.labels.tolist() == [1, 2] and torch.equal(sub[0][0], source.images[2])
        assert PairedDataset(images(2, 1, 4, 4), images(2, 1, 4, 4)).labels is None

    def test_lengths_and_sizes_must_agree(self):
        with pytest.raises(ValueError, match=r"p: source and target must hold one image per pair, got 2 source and 3"):
            PairedDataset(images(2, 1, 4, 4), images(3, 1, 4, 4), "p")
        with pytest.raises(ValueError, match=r"same height and width, got 4x4 and 4x5"):
            PairedDataset(images(2, 1, 4, 4), images(2, 1, 4, 5))
        with pytest.raises(TypeError, match=r"target must be an ImageDataset, got Tensor"):
            PairedDataset(images(2, 1, 4, 4), torch.zeros(2, 1, 4, 4))


class TestUnpairedDataset:
    def test_items_cycle_the_smaller_domain(self):
        a = ImageDataset(torch.arange(2).view(2, 1, 1, 1).expand(2, 1, 3, 3).to(torch.uint8).clone(), None, 256)
        b = ImageDataset(torch.arange(5).view(5, 1, 1, 1).expand(5, 3, 3, 3).to(torch.uint8).clone(), None, 256)
        data = UnpairedDataset(a, b)
        assert len(data) == 5
        assert [(int(x[0, 0, 0]), int(y[0, 0, 0])) for x, y in data] == [(0, 0), (1, 1), (0, 2), (1, 3), (0, 4)]
        with pytest.raises(IndexError):
            data[5]
        assert len(UnpairedDataset(a.subset(slice(0, 0)), b)) == 0

    def test_ground_truth_must_align_and_follows_subset(self):
        a, b = images(3, 1, 4, 4), images(2, 3, 4, 4)
        data = UnpairedDataset(a, b, "u", images(3, 3, 4, 4, 7), images(2, 1, 4, 4))
        sub = data.subset(a=slice(0, 2))
        assert len(sub.a) == 2 and len(sub.a_in_b) == 2 and len(sub.b) == 2 and len(sub.b_in_a) == 2
        with pytest.raises(ValueError, match=r"u: a_in_b must hold one image per image of a \(3\), shaped like b's "
                                             r"\(3, 4, 4\)"):
            UnpairedDataset(a, b, "u", images(3, 1, 4, 4))
        with pytest.raises(ValueError, match=r"b_in_a must hold one image per image of b \(2\)"):
            UnpairedDataset(a, b, "u", b_in_a=images(3, 1, 4, 4))
        with pytest.raises(ValueError, match=r"same height and width, got 4x4 and 5x4"):
            UnpairedDataset(a, images(2, 1, 5, 4))


# -- folders ---------------------------------------------------------------------------------------------
class TestLoadPairs:
    def test_side_by_side(self, tmp_path):
        for k in range(3):
            save(tmp_path / "train" / f"{k}.png", rgb(k, 4, 10))
        save(tmp_path / "val" / "0.png", rgb(9, 4, 10))
        pairs = load_pairs(tmp_path)
        assert isinstance(pairs, PairedDataset) and len(pairs) == 3 and pairs.labels is None
        assert pairs.source.shape == (3, 4, 5) == pairs.target.shape and pairs.source.levels == 256
        source, target = pairs[1]
        assert torch.equal(source, chw(rgb(1, 4, 10)[:, :5])) and torch.equal(target, chw(rgb(1, 4, 10)[:, 5:]))
        assert len(load(f"pairs:{tmp_path}", "val")) == 1
        grey = load_pairs(tmp_path, grey=True, size=(3, 2))
        assert grey.source.shape == (1, 3, 2) == grey.target.shape

    def test_a_and_b_folders(self, tmp_path):
        for seed, name in enumerate(("x.png", "y.png")):
            save(tmp_path / "A" / "test" / name, rgb(seed, 6, 4))
            save(tmp_path / "B" / "test" / name, np.full((6, 4), 10 + seed, np.uint8))
        pairs = load_pairs(tmp_path, "test")
        assert pairs.source.shape == (3, 6, 4) and pairs.target.shape == (3, 6, 4)
        assert int(pairs[1][1][0, 0, 0]) == 11 and torch.equal(pairs[0][0], chw(rgb(0, 6, 4)))
        assert load(f"pairs:{tmp_path}", "test").target.shape == (3, 6, 4)
        assert load_pairs(tmp_path, "test", grey=True).source.shape == (1, 6, 4)

    def test_missing_and_empty(self, tmp_path):
        with pytest.raises(DataError, match=r"nope: no such directory; expected pix2pix pairs"):
            load_pairs(tmp_path / "nope")
        with pytest.raises(DataError, match=rf"{re.escape(str(tmp_path))}: has neither a train/ folder nor A/train/ "
                                             r"and B/train/"):
            load_pairs(tmp_path)
        (tmp_path / "train").mkdir()
        with pytest.raises(DataError, match=r"train: contains no images; expected images ending in .png"):
            load_pairs(tmp_path)
        save(tmp_path / "A" / "val" / "0.png", rgb(0, 4, 4))
        with pytest.raises(DataError, match=r"B/val: no such directory \(while .*A/val exists\)"):
            load_pairs(tmp_path, "val")
        save(tmp_path / "A" / "train" / "0.png", rgb(0, 4, 4))
        with pytest.raises(DataError, match=r"holds both train/ \(side-by-side pairs\) and A/train/"):
            load_pairs(tmp_path)

    def test_odd_width_and_sizes(self, tmp_path):
        save(tmp_path / "train" / "a.png", rgb(0, 4, 10))
        save(tmp_path / "train" / "b.png", rgb(1, 4, 9))
        with pytest.raises(DataError, match=r"b.png: is 9 pixels wide, an odd width that cannot split into two halves; "
                                             r"expected a side-by-side A\|B image of even width"):
            load_pairs(tmp_path)
        save(tmp_path / "train" / "b.png", rgb(1, 6, 8))
        with pytest.raises(DataError, match=r"train: has image halves of sizes \[\(4, 5\), \(6, 4\)\] "
                                             r"\(height, width\): "
                                             r"a.png is 4x5, b.png is 6x4; expected image halves of one size"):
            load_pairs(tmp_path)
        assert load_pairs(tmp_path, size=4).source.shape == (3, 4, 4)

    def test_a_and_b_names_and_sizes_must_match(self, tmp_path):
        for name in ("1.png", "2.png", "3.png"):
            save(tmp_path / "A" / "train" / name, rgb(0, 4, 4))
        for name in ("1.png", "4.png"):
            save(tmp_path / "B" / "train" / name, rgb(0, 4, 4))
        with pytest.raises(DataError, match=rf"{re.escape(str(tmp_path))}: 2 image\(s\) only in A/train: '2.png', "
                                             r"'3.png'; 1 image\(s\) only in B/train: '4.png'; expected the same file "
                                             r"names in A/train and B/train"):
            load_pairs(tmp_path)
        (tmp_path / "A" / "train" / "2.png").unlink()
        (tmp_path / "A" / "train" / "3.png").unlink()
        save(tmp_path / "A" / "train" / "4.png", rgb(0, 5, 4))
        with pytest.raises(DataError, match=r"A/train: has images of sizes \[\(4, 4\), \(5, 4\)\].*4.png is 5x4"):
            load_pairs(tmp_path)
        save(tmp_path / "A" / "train" / "1.png", rgb(0, 5, 4))
        with pytest.raises(DataError, match=r"A/train images are 5x4, B/train images are 4x4; expected A/train and "
                                             r"B/train images of one size \(or pass size=\)"):
            load_pairs(tmp_path)
        assert load_pairs(tmp_path, size=(2, 3)).target.shape == (3, 2, 3)

    def test_bad_split(self, tmp_path):
        with pytest.raises(ValueError, match="split must be the name of a folder"):
            load_pairs(tmp_path, "../train")


class TestLoadUnpaired:
    def test_domains_of_different_lengths_and_channels(self, tmp_path):
        for k in range(3):
            save(tmp_path / "trainA" / f"{k}.png", rgb(k, 5, 4))
        save(tmp_path / "trainB" / "z.jpg", np.full((5, 4), 200, np.uint8))
        save(tmp_path / "testA" / "0.png", rgb(7, 5, 4))
        save(tmp_path / "testB" / "0.png", rgb(8, 5, 4))
        data = load_unpaired(tmp_path)
        assert isinstance(data, UnpairedDataset) and len(data.a) == 3 and len(data.b) == 1 and len(data) == 3
        assert data.a.shape == (3, 5, 4) and data.b.shape == (3, 5, 4) and data.a_in_b is None
        assert torch.equal(data[2][0], chw(rgb(2, 5, 4)))
        test = load(f"unpaired:{tmp_path}", "test")
        assert len(test.a) == 1 and torch.equal(test.b.images[0], chw(rgb(8, 5, 4)))
        assert load_unpaired(tmp_path, grey=True, size=3).a.shape == (1, 3, 3)

    def test_errors_name_the_folder(self, tmp_path):
        with pytest.raises(DataError, match=r"nope: no such directory; expected CycleGAN domains"):
            load_unpaired(tmp_path / "nope")
        save(tmp_path / "trainA" / "0.png", rgb(0, 4, 4))
        with pytest.raises(DataError, match=r"trainB: no such directory \(domain B\)"):
            load_unpaired(tmp_path)
        (tmp_path / "trainB").mkdir()
        with pytest.raises(DataError, match=r"trainB: contains no images: domain B is empty"):
            load_unpaired(tmp_path)
        save(tmp_path / "trainB" / "0.png", rgb(0, 4, 6))
        with pytest.raises(DataError, match=rf"{re.escape(str(tmp_path))}: trainA images are 4x4, trainB images "
                                             r"are 4x6; expected trainA and trainB images of one size"):
            load_unpaired(tmp_path)
        save(tmp_path / "trainB" / "1.png", rgb(0, 4, 4))
        with pytest.raises(DataError, match=r"trainB: has images of sizes \[\(4, 4\), \(4, 6\)\]"):
            load_unpaired(tmp_path)
        assert load_unpaired(tmp_path, size=4).b.shape == (3, 4, 4)


# -- the bundled tasks -----------------------------------------------------------------------------------
class TestEdgesToDigits:
    def test_deterministic_shape_and_labels(self, edges_val):
        again = edges_to_digits("val")
        assert torch.equal(again.source.images, edges_val.source.images)
        assert torch.equal(again.target.images, edges_val.target.images)
        assert edges_val.name == "edges-digits/val" and len(edges_val) == 180
        assert edges_val.source.shape == (1, 32, 32) == edges_val.target.shape and edges_val.source.levels == 256
        assert torch.equal(edges_val.target.images, digits("val", size=32).images)
        assert torch.equal(edges_val.labels, digits("val").labels)
        assert torch.equal(edges_val.target.labels, edges_val.labels)
        assert edges_to_digits("test", size=16).source.shape == (1, 16, 16)

    def test_edges_are_a_nonempty_outline_of_the_ink(self, edges_val):
        edges, ink = edges_val.source.images, edges_val.target.images >= 128
        assert set(torch.unique(edges).tolist()) == {0, 255}
        assert not ((edges > 0) & ~ink).any()  # a subset of the ink
        assert bool(((edges > 0).flatten(1).sum(1) > 0).all())  # on every image
        assert bool(((edges > 0).flatten(1).sum(1) < ink.flatten(1).sum(1)).all())  # and not all of it

    def test_ink_edges_by_hand(self):
        image = torch.zeros(1, 1, 6, 6, dtype=torch.uint8)
        image[0, 0, 1:5, 0:4] = 200  # a 4x4 square touching the left border
        edges = ink_edges(image)[0, 0] > 0
        expected = torch.zeros(6, 6, dtype=torch.bool)
        expected[1:5, 0:4] = True
        expected[2:4, 1:3] = False  # the interior stays; beyond the border is paper, so column 0 is edge
        assert torch.equal(edges, expected)
        with pytest.raises(TypeError, match="integer tensor"):
            ink_edges(image.float())


class TestInvertedDigits:
    def test_the_map_and_its_inverse(self):
        v = torch.arange(256)
        f = invert_ink(v)
        expected = torch.tensor([round(255 * (1 - (x / 255) ** 0.5)) for x in range(256)])
        assert f.dtype == torch.uint8 and torch.equal(f.long(), expected)
        assert int(f[0]) == 255 and int(f[255]) == 0 and bool((f[1:] <= f[:-1]).all())
        back = uninvert_ink(f)
        assert int((back.long() - v).abs().max()) <= 1  # f^-1(f(v)) within one level
        hit = torch.unique(f)
        assert torch.equal(invert_ink(uninvert_ink(hit)), hit)  # f(f^-1(w)) = w where f reaches w
        inverse = uninvert_ink(v)
        assert bool((inverse[1:] <= inverse[:-1]).all()) and int(inverse[0]) == 255 and int(inverse[255]) == 0
        assert invert_ink(torch.zeros(2, 1, 3, 3, dtype=torch.long)).shape == (2, 1, 3, 3)
        with pytest.raises(ValueError, match=r"invert_ink takes 8-bit values in \[0, 255\], got 256"):
            invert_ink(torch.tensor([256]))
        with pytest.raises(TypeError, match=r"uninvert_ink takes an integer tensor.*got torch.float32"):
            uninvert_ink(torch.zeros(3))

    def test_domains_ground_truth_and_determinism(self, inverted_val):
        data, again = inverted_val, inverted_digits("val")
        for part in ("a", "b", "a_in_b", "b_in_a"):
            assert torch.equal(getattr(data, part).images, getattr(again, part).images)
        big = digits("val", size=32)
        assert data.name == "inverted-digits/val" and len(data.a) == 90 == len(data.b)
        assert torch.equal(data.a.images, big.images[0::2]) and torch.equal(data.a.labels, big.labels[0::2])
        assert torch.equal(data.b.images, invert_ink(big.images[1::2])) and torch.equal(data.b.labels, big.labels[1::2])
        assert torch.equal(data.a_in_b.images, invert_ink(data.a.images))
        assert int((data.b_in_a.images.long() - big.images[1::2].long()).abs().max()) <= 1
        assert data.a.shape == data.b.shape == (1, 32, 32) and data.a.levels == data.b.levels == 256
        assert float(data.b.images.float().mean()) > 128 > float(data.a.images.float().mean())  # white paper in B
        assert inverted_digits("test", size=12).a.shape == (1, 12, 12)


def test_load_specs():
    assert isinstance(load("edges-digits", "test"), PairedDataset)
    inverted = load("inverted-digits", "val")
    assert isinstance(inverted, UnpairedDataset) and inverted.name == "inverted-digits/val"
    with pytest.raises(ValueError, match=r"data spec must be one of 'digits', 'digits-binary', 'edges-digits', "
                                         r"'inverted-digits', 'mnist:PATH', .*'pairs:PATH', 'unpaired:PATH'; "
                                         r"got 'pairs'"):
        load("pairs")
    with pytest.raises(ValueError, match="data spec must be one of"):
        load("edges-digits:/x")
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test'\) for unpaired data, got 'val'"):
        load("unpaired:/x", "val")
