"""Training: the trainers, checkpoints, weight averaging, metrics logs and sample grids."""
from fastgen.train.checkpoint import Checkpoint, CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from fastgen.train.ema import EMA
from fastgen.train.gan_trainer import GANHistory, GANTrainConfig, GANTrainer
from fastgen.train.grid import image_grid, save_grid
from fastgen.train.image_pool import ImagePool
from fastgen.train.metrics_log import MetricsLog
from fastgen.train.progressive_trainer import ProgressiveTrainConfig, ProgressiveTrainer
from fastgen.train.run_dir import RunDirectoryError
from fastgen.train.trainer import History, TrainConfig, Trainer, TrainingDiverged
from fastgen.train.translation_trainer import (TranslationHistory, TranslationTrainConfig, TranslationTrainer,
                                              translation_error)

__all__ = ["EMA", "Checkpoint", "CheckpointError", "GANHistory", "GANTrainConfig", "GANTrainer", "History",
           "ImagePool", "MetricsLog", "ProgressiveTrainConfig", "ProgressiveTrainer", "RunDirectoryError", "TrainConfig", "Trainer", "TrainingDiverged",
           "TranslationHistory", "TranslationTrainConfig", "TranslationTrainer", "image_grid",
           "load_checkpoint", "model_from_checkpoint", "save_checkpoint", "save_grid", "translation_error"]
