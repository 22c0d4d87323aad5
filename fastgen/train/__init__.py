"""Training: the trainer, checkpoints and sample grids."""
from fastgen.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from fastgen.train.grid import image_grid, save_grid
from fastgen.train.trainer import History, TrainConfig, Trainer

__all__ = ["History", "TrainConfig", "Trainer", "image_grid", "load_checkpoint", "model_from_checkpoint",
           "save_checkpoint", "save_grid"]
