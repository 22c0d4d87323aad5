"""Evaluation: likelihood units and the sample-quality metrics (FID, KID, Inception Score,
precision/recall) with their feature networks."""
from fastgen.metrics.digits_features import DigitsFeatureNetwork, digits_network, train_digits_network
from fastgen.metrics.features import FeatureNetwork, extract_features, levels_to_unit
from fastgen.metrics.inception import InceptionV3FID, load_inception
from fastgen.metrics.likelihood import bits_per_dim
from fastgen.metrics.quality import QualityReport, data_quality, sample_quality
from fastgen.metrics.scores import (PrecisionRecall, ScoreWithSpread, fid, frechet_distance, inception_score, kid,
                                    precision_recall)
from fastgen.metrics.statistics import FeatureStatistics

__all__ = ["DigitsFeatureNetwork", "FeatureNetwork", "FeatureStatistics", "InceptionV3FID", "PrecisionRecall",
           "QualityReport", "ScoreWithSpread", "bits_per_dim", "data_quality", "digits_network", "extract_features",
           "fid", "frechet_distance", "inception_score", "kid", "levels_to_unit", "load_inception",
           "precision_recall", "sample_quality", "train_digits_network"]
