"""Evaluation: likelihood units and the sample-quality metrics (FID, KID, Inception Score,
precision/recall) with their feature networks, and a kernel MMD two-sample test."""
from fastgen.metrics.digits_features import DigitsFeatureNetwork, digits_network, train_digits_network
from fastgen.metrics.features import FeatureNetwork, extract_features, levels_to_unit
from fastgen.metrics.inception import InceptionV3FID, load_inception
from fastgen.metrics.likelihood import bits_per_dim
from fastgen.metrics.quality import QualityReport, data_quality, sample_quality
from fastgen.metrics.scores import (PrecisionRecall, ScoreWithSpread, fid, frechet_distance, inception_score, kid,
                                    precision_recall)
from fastgen.metrics.statistics import FeatureStatistics
from fastgen.metrics.two_sample import MMDTest, mmd_test

__all__ = ["DigitsFeatureNetwork", "FeatureNetwork", "FeatureStatistics", "InceptionV3FID", "MMDTest",
           "PrecisionRecall", "QualityReport", "ScoreWithSpread", "bits_per_dim", "data_quality", "digits_network",
           "extract_features", "fid", "frechet_distance", "inception_score", "kid", "levels_to_unit",
           "load_inception", "mmd_test", "precision_recall", "sample_quality", "train_digits_network"]
