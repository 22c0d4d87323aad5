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


# -- loaders never cast silently, and never inflate what a file cannot hold ---------------------------
class TestNoSilentCasts:
    def write_cifar(self, directory, data, labels=None):
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            batch = {b"data": data, b"labels": list(range(len(data))) if labels is None else labels}
            (directory / name).write_bytes(pickle.dumps(batch, protocol=2))

    @pytest.mark.parametrize("value,dtype,message", [
        (300.7, np.float64, "pixels are float64, not integers"),
        (-1, np.int64, "holds the pixel value -1, outside"),
        (300, np.int64, "holds the pixel value 300, outside"),
    ])
    def test_cifar_pixels_outside_bytes_are_refused(self, tmp_path, value, dtype, message):
        data = np.zeros((2, 3072), dtype=dtype)
        data[1, 5] = value
        self.write_cifar(tmp_path, data)
        with pytest.raises(DataError, match=rf"data_batch_1: {message}"):
            load_cifar10(tmp_path)

    @pytest.mark.parametrize("labels,message", [([0.0, 1.5], "labels are float64, not integers"),
                                                ([0, 10], r"holds the label 10 \(at index 1\), outside the 10 classes"),
                                                ([-1, 0], "holds the label -1")])
    def test_cifar_labels_must_be_classes(self, tmp_path, labels, message):
        self.write_cifar(tmp_path, np.zeros((2, 3072), np.uint8), labels)
        with pytest.raises(DataError, match=message):
            load_cifar10(tmp_path)

    def test_npz_layouts_that_would_be_guessed_are_refused(self, tmp_path):
        for shape in ((2, 6, 5, 4), (2, 4, 6, 5), (2, 6, 5, 2)):
            np.savez(tmp_path / "d.npz", images=np.zeros(shape, np.uint8))
            with pytest.raises(DataError, match=r"no channel axis of 1 or 3"):
                load_npz(tmp_path / "d.npz")
        np.savez(tmp_path / "d.npz", images=np.zeros((2, 6, 5, 4), np.uint8))
        with pytest.raises(DataError, match=r"RGBA\? drop the alpha channel first"):
            load_npz(tmp_path / "d.npz")

    def test_npz_values_and_labels(self, tmp_path):
        np.savez(tmp_path / "w.npz", images=np.full((2, 3, 3), 300, np.uint16))
        with pytest.raises(DataError, match=r"pixel value 300, outside \[0, 255\] \(16-bit data"):
            load_npz(tmp_path / "w.npz")
        np.savez(tmp_path / "i.npz", images=np.full((2, 3, 3), 200, np.int64), labels=np.array([0, 1]))
        assert load_npz(tmp_path / "i.npz").images.dtype == torch.uint8  # integer pixels in range are fine
        for labels, message in ((np.array([0.0, 2.7]), "labels are float64, not integers"),
                                (np.array([0, -3]), "holds the label -3"),
                                (np.array([True, False]), "labels are bool")):
            np.savez(tmp_path / "l.npz", images=np.zeros((2, 3, 3), np.uint8), labels=labels)
            with pytest.raises(DataError, match=message):
                load_npz(tmp_path / "l.npz")
        np.savez(tmp_path / "s.npz", images=np.zeros((2, 3, 3), np.uint8), labels=np.array([0, 255]))
        with pytest.warns(UserWarning, match=r"the labels make 256 classes \(0..255\), and only 2 occur"):
            assert load_npz(tmp_path / "s.npz").n_classes == 256
        with pytest.raises(DataError, match="outside the 10 classes"):
            load_npz(tmp_path / "s.npz", n_classes=10)

    def test_mnist_labels_must_be_digits(self, tmp_path):
        write_idx(tmp_path / "img", np.zeros((2, 4, 4), dtype=np.uint8))
        write_idx(tmp_path / "lab", np.array([3, 255], dtype=np.uint8))
        with pytest.raises(DataError, match=r"lab: holds the label 255 \(at index 1\), outside the 10 classes"):
            load_mnist(tmp_path / "img", tmp_path / "lab")
        assert load_mnist(tmp_path / "img", tmp_path / "lab", n_classes=256).n_classes == 256

    def test_sixteen_bit_png_keeps_its_high_byte(self, tmp_path):
        from PIL import Image

        grey = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000)
        Image.fromarray(grey).save(tmp_path / "g.png")
        assert Image.open(tmp_path / "g.png").mode == "I;16"
        d = load_image_folder(tmp_path, grey=True)
        assert torch.equal(d.images[0, 0], torch.from_numpy((grey >> 8).astype(np.uint8)))  # 57000 -> 222, not 255

    def test_transparency_is_dropped_with_a_warning(self, tmp_path):
        from PIL import Image

        rgba = np.random.default_rng(0).integers(0, 256, (4, 5, 4), dtype=np.uint8)
        rgba[..., 3] = 255
        Image.fromarray(rgba).save(tmp_path / "opaque.png")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            d = load_image_folder(tmp_path)  # an opaque alpha channel loses nothing: no warning
        assert torch.equal(d.images[0], torch.from_numpy(rgba[..., :3]).permute(2, 0, 1))
        rgba[0, 0, 3] = 0
        Image.fromarray(rgba).save(tmp_path / "clear.png")
        with pytest.warns(UserWarning, match=r"1 image\(s\) have transparent pixels .*clear.png.*alpha channel is "
                                             "dropped"):
            load_image_folder(tmp_path)

    def test_image_dataset_checks_labels_and_values(self):
        images = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
        with pytest.raises(ValueError, match="labels must be an integer tensor, got torch.float32"):
            ImageDataset(images, torch.tensor([0.0, 2.7]), 4)
        with pytest.raises(ValueError, match="labels must be >= 0, got -1"):
            ImageDataset(images, torch.tensor([0, -1]), 4)
        with pytest.raises(ValueError, match=r"labels must be \[0, 2\) \(one per class name\), got 2"):
            ImageDataset(images, torch.tensor([0, 2]), 4, ["a", "b"])
        with pytest.raises(ValueError, match="image values reach -1"):
            ImageDataset(torch.full((1, 1, 2, 2), -1), None, 4)
        with pytest.raises(ValueError, match="levels must be an integer >= 2"):
            ImageDataset(images, None, 1)

    def test_splits_other_than_the_files_are_refused(self, tmp_path):
        with pytest.raises(ValueError, match=r"split must be one of \('train', 'test'\) for mnist data, got 'val'"):
            load(f"mnist:{tmp_path}", "val")
        with pytest.raises(TypeError, match="data spec must be a string"):
            load(None)


class TestNoMemoryBombs:
    def test_a_gzip_idx_file_is_streamed_as_far_as_its_header_says(self, tmp_path):
        """A 100 kB gzip file that inflates to 100 MB, behind a header declaring 5 x 4 x 4 bytes: the
        loader reads the header and one byte more than it declares, never the 100 MB."""
        import tracemalloc

        header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 5, 4, 4)
        with gzip.open(tmp_path / "bomb.gz", "wb") as f:
            f.write(header)
            for _ in range(100):
                f.write(bytes(1 << 20))
        assert (tmp_path / "bomb.gz").stat().st_size < 200_000
        tracemalloc.start()
        try:
            with pytest.raises(DataError, match=r"bomb.gz: holds more bytes of data where its header \(5, 4, 4\) "
                                                r"needs 80"):
                load_mnist(tmp_path / "bomb.gz")
            assert tracemalloc.get_traced_memory()[1] < 5 << 20
        finally:
            tracemalloc.stop()

    def test_absurd_declared_sizes_are_refused_before_reading(self, tmp_path):
        header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 2**16, 2**16)
        (tmp_path / "huge").write_bytes(header + bytes(100))
        with pytest.raises(DataError, match=r"declares \(60000, 65536, 65536\).*more than"):
            load_mnist(tmp_path / "huge")
        with gzip.open(tmp_path / "lying.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 28, 28) + bytes(1000))
        with pytest.raises(DataError, match="more than a gzip file of .* bytes can hold"):
            load_mnist(tmp_path / "lying.gz")
        (tmp_path / "long").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 1, 2, 2) + bytes(5))
        with pytest.raises(DataError, match="holds 5 bytes of data where its header"):
            load_mnist(tmp_path / "long")

    def test_an_npz_header_declaring_more_than_its_entry_holds_is_refused(self, tmp_path):
        import io
        import zipfile

        from numpy.lib import format as npy

        buffer = io.BytesIO()
        npy.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": (10**6, 100, 100)})
        with zipfile.ZipFile(tmp_path / "lie.npz", "w") as archive:
            archive.writestr("images.npy", buffer.getvalue() + bytes(64))
        with pytest.raises(DataError, match=r"'images' declares 10000000000 bytes of data and holds 64"):
            load_npz(tmp_path / "lie.npz")
