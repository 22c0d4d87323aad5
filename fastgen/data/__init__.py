"""Data sets: the bundled digits, loaders for MNIST, CIFAR-10, image folders and .npz files, and
image-to-image translation data (pix2pix pairs, CycleGAN domains, two bundled digit tasks)."""
from fastgen.data.dataset import DataError, ImageDataset
from fastgen.data.digits import digits
from fastgen.data.files import load_cifar10, load_image_folder, load_mnist, load_npz
from fastgen.data.spec import load
from fastgen.data.translation import (PairedDataset, UnpairedDataset, edges_to_digits, ink_edges, invert_ink,
                                      inverted_digits, load_pairs, load_unpaired, uninvert_ink)

__all__ = ["DataError", "ImageDataset", "PairedDataset", "UnpairedDataset", "digits", "edges_to_digits", "ink_edges",
           "invert_ink", "inverted_digits", "load", "load_cifar10", "load_image_folder", "load_mnist", "load_npz",
           "load_pairs", "load_unpaired", "uninvert_ink"]
