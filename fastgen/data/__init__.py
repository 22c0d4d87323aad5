"""Data sets: the bundled digits and loaders for MNIST, CIFAR-10, image folders and .npz files."""
from fastgen.data.dataset import DataError, ImageDataset
from fastgen.data.digits import digits
from fastgen.data.files import load_cifar10, load_image_folder, load_mnist, load_npz
from fastgen.data.spec import load

__all__ = ["DataError", "ImageDataset", "digits", "load", "load_cifar10", "load_image_folder", "load_mnist",
           "load_npz"]
