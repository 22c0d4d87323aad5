"""Generative image models."""
from fastgen.models.aae import AdversarialAutoencoder
from fastgen.models.autoregressive import AutoregressiveImageModel
from fastgen.models.cyclegan import CycleGAN
from fastgen.models.gan import DCGAN, GAN, MLPGAN
from fastgen.models.gated_pixelcnn import GatedPixelCNN
from fastgen.models.pixelcnn import PixelCNN
from fastgen.models.pixelcnnpp import PixelCNNpp
from fastgen.models.pix2pix import Pix2Pix
from fastgen.models.pixelvae import PixelVAE
from fastgen.models.progressive_gan import ProgressiveGAN
from fastgen.models.translation import ImageTranslator
from fastgen.models.vae import VAE, Autoencoder, LikelihoodEstimate

__all__ = ["DCGAN", "GAN", "MLPGAN", "AdversarialAutoencoder", "AutoregressiveImageModel", "Autoencoder",
           "CycleGAN", "GatedPixelCNN", "ImageTranslator", "LikelihoodEstimate", "Pix2Pix", "PixelCNN", "PixelCNNpp",
           "PixelVAE", "ProgressiveGAN", "VAE"]
