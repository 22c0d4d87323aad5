"""Data: the bundled digits, and every file loader on small files the tests write."""
from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from fastgen.data import DataError, ImageDataset, digits, load, load_cifar10, load_image_folder, load_mnist, load_npz

# Optional dependencies of fastgen's data, training and demo (installed by `make test`).
pytest.importorskip("sklearn")
pytest.importorskip("PIL")


class TestDigits:
    def test_splits_are_fixed_disjoint_and_complete(self):
        splits = {s: digits(s) for s in ("train", "val", "test")}
        assert [len(d) for d in splits.values()] == [1257, 180, 360]
        rows = [tuple(img.flatten().tolist()) + (int(lab),) for d in splits.values()
                for img, lab in zip(d.images, d.labels)]
        from sklearn.datasets import load_digits

        bunch = load_digits()
        everything = sorted(tuple(img.astype(int).flatten().tolist()) + (int(t),)
                            for img, t in zip(bunch.images, bunch.target))
        assert sorted(rows) == everything
        assert torch.equal(digits("val").images, splits["val"].images)  # same split every call

    def test_levels_shape_and_labels(self):
        d = digits("test")
        assert d.shape == (1, 8, 8) and d.levels == 17 and d.images.dtype == torch.uint8
        assert int(d.images.max()) == 16 and set(d.labels.tolist()) == set(range(10)) and d.n_classes == 10
        image, label = d[3]
        assert image.dtype == torch.long and label.dtype == torch.long

    def test_binarized(self):
        d, b = digits("val"), digits("val", binarized=True)
        assert b.levels == 2 and torch.equal(b.images, (d.images >= 8).to(torch.uint8))

    def test_bad_split(self):
        with pytest.raises(ValueError, match="split must be one of"):
            digits("validation")


def write_idx(path, array, gz=False):
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


class TestMnist:
    @pytest.mark.parametrize("gz", [False, True])
    def test_reads_images_and_labels(self, tmp_path, gz):
        images = np.random.default_rng(0).integers(0, 256, (5, 7, 6), dtype=np.uint8)
        labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, gz)
        write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, gz)
        d = load(f"mnist:{tmp_path}")
        assert d.shape == (1, 7, 6) and d.levels == 256
        assert torch.equal(d.images[:, 0], torch.from_numpy(images)) and d.labels.tolist() == [3, 1, 4, 1, 5]

    def test_truncated_and_foreign_files(self, tmp_path):
        images = np.zeros((5, 4, 4), dtype=np.uint8)
        write_idx(tmp_path / "img", images)
        data = (tmp_path / "img").read_bytes()
        (tmp_path / "short").write_bytes(data[:-3])
        with pytest.raises(DataError, match=r"short.*truncated.*expected an MNIST IDX file"):
            load_mnist(tmp_path / "short")
        (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
        with pytest.raises(DataError, match=r"png: header 89504e47 is not a 3-D ubyte IDX header"):
            load_mnist(tmp_path / "png")
        (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b" + bytes(10))
        with pytest.raises(DataError, match="damaged gzip"):
            load_mnist(tmp_path / "bad.gz")
        with pytest.raises(DataError, match="missing-file: no such file"):
            load_mnist(tmp_path / "missing-file")

    def test_label_count_must_match(self, tmp_path):
        write_idx(tmp_path / "img", np.zeros((5, 4, 4), dtype=np.uint8))
        write_idx(tmp_path / "lab", np.zeros(4, dtype=np.uint8))
        with pytest.raises(DataError, match="holds 4 labels"):
            load_mnist(tmp_path / "img", tmp_path / "lab")


class TestCifar10:
    def write(self, directory, n=3):
        rng = np.random.default_rng(1)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n))}
            (directory / name).write_bytes(pickle.dumps(batch, protocol=2))

    def test_reads_train_and_test(self, tmp_path):
        self.write(tmp_path)
        train, test = load_cifar10(tmp_path), load(f"cifar10:{tmp_path}", split="test")
        assert len(train) == 15 and len(test) == 3 and train.shape == (3, 32, 32) and train.levels == 256
        assert train.classes[0] == "airplane" and test.labels.tolist() == [0, 1, 2]
        raw = pickle.loads((tmp_path / "test_batch").read_bytes())[b"data"]
        assert torch.equal(test.images.flatten(1), torch.from_numpy(raw))

    def test_refuses_code_and_bad_batches(self, tmp_path):
        self.write(tmp_path)

        class Evil:
            def __reduce__(self):
                return (print, ("this must never run",))

        (tmp_path / "data_batch_2").write_bytes(pickle.dumps({b"data": Evil()}))
        with pytest.raises(DataError, match=r"data_batch_2: is not a CIFAR-10 batch.*refusing to load builtins.print"):
            load_cifar10(tmp_path)
        (tmp_path / "data_batch_2").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
        with pytest.raises(DataError, match=r"data_batch_2: holds data of shape \(2, 10\)"):
            load_cifar10(tmp_path)
        self.write(tmp_path)
        (tmp_path / "data_batch_3").unlink()
        with pytest.raises(DataError, match="data_batch_3: no such file"):
            load_cifar10(tmp_path)


class TestImageFolder:
    def test_labels_by_subfolder_png_and_jpeg(self, tmp_path):
        from PIL import Image

        rng = np.random.default_rng(2)
        for cls, fmt in (("cat", "PNG"), ("dog", "JPEG")):
            (tmp_path / cls).mkdir()
            for k in range(2):
                pixels = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / cls / f"{k}.{fmt.lower()}", format=fmt)
        d = load(f"folder:{tmp_path}")
        assert d.shape == (3, 5, 4) and d.classes == ["cat", "dog"] and d.labels.tolist() == [0, 0, 1, 1]
        png = np.array(Image.open(tmp_path / "cat" / "0.png"))
        assert torch.equal(d.images[0], torch.from_numpy(png).permute(2, 0, 1))
        grey = load_image_folder(tmp_path, grey=True, size=3)
        assert grey.shape == (1, 3, 3)

    def test_flat_folder_is_unlabelled_and_sizes_must_agree(self, tmp_path):
        from PIL import Image

        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
        assert load_image_folder(tmp_path).labels is None
        Image.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / "b.png")
        with pytest.raises(DataError, match="images of sizes"):
            load_image_folder(tmp_path)
        (tmp_path / "c.png").write_bytes(b"not an image")
        with pytest.raises(DataError, match=r"c.png: cannot be decoded.*expected a PNG or JPEG image"):
            load_image_folder(tmp_path, size=4)

    def test_missing_or_empty(self, tmp_path):
        with pytest.raises(DataError, match="no such directory"):
            load_image_folder(tmp_path / "nope")
        with pytest.raises(DataError, match="contains no images"):
            load_image_folder(tmp_path)


class TestNpz:
    @pytest.mark.parametrize("shape,key", [((4, 6, 5), "images"), ((4, 6, 5, 3), "x"), ((4, 3, 6, 5), "images")])
    def test_layouts(self, tmp_path, shape, key):
        images = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
        np.savez(tmp_path / "d.npz", **{key: images, "labels": np.arange(4)})
        d = load(f"npz:{tmp_path / 'd.npz'}")
        assert d.shape == ((1, 6, 5) if len(shape) == 3 else (3, 6, 5)) and d.labels.tolist() == [0, 1, 2, 3]

    def test_bad_archives(self, tmp_path):
        np.savez(tmp_path / "f.npz", images=np.zeros((2, 3, 3), np.float32))
        with pytest.raises(DataError, match=r"f.npz: 'images' is float32"):
            load_npz(tmp_path / "f.npz")
        np.savez(tmp_path / "k.npz", other=np.zeros((2, 3, 3), np.uint8))
        with pytest.raises(DataError, match=r"has no images array \(keys: \['other'\]\)"):
            load_npz(tmp_path / "k.npz")
        (tmp_path / "t.npz").write_bytes((tmp_path / "k.npz").read_bytes()[:40])
        with pytest.raises(DataError, match="t.npz"):
            load_npz(tmp_path / "t.npz")
        with pytest.raises(DataError, match="no such file"):
            load_npz(tmp_path / "missing.npz")


class TestImageDataset:
    def test_quantize_and_binarize(self):
        d = ImageDataset(torch.tensor([0, 127, 128, 255], dtype=torch.uint8).view(1, 1, 2, 2), None, 256)
        assert d.quantize(2).images.flatten().tolist() == [0, 0, 1, 1]
        assert d.quantize(4).images.flatten().tolist() == [0, 1, 2, 3]
        assert d.binarize().images.flatten().tolist() == [0, 0, 1, 1]

    def test_rejects_values_outside_levels(self):
        with pytest.raises(ValueError, match="outside levels=4"):
            ImageDataset(torch.full((1, 1, 2, 2), 4), None, 4)

    def test_bad_spec(self):
        with pytest.raises(ValueError, match="data spec must be one of"):
            load("imagenet:/x")
