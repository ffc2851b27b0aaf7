"""Metrics of ensembles and their members (numpy only; never imports torch or openvino).

Functional API (pure functions over numpy arrays) and streaming accumulators that share the same
private helpers, plus :class:`PoolStats` / :func:`score_subsets` for scoring every k-subset of a pool
from per-member and pairwise sufficient statistics, and :func:`correlation_study`; confidence intervals
and paired tests (:mod:`ovdiv.metrics.intervals`, :mod:`ovdiv.metrics.evidence`).
"""

from __future__ import annotations

from ovdiv.metrics._checks import MetricWarning as MetricWarning
from ovdiv.metrics.accumulators import AttributionDiversity as AttributionDiversity
from ovdiv.metrics.accumulators import CalibrationError as CalibrationError
from ovdiv.metrics.accumulators import KLDivergence as KLDivergence
from ovdiv.metrics.accumulators import NegativeLogLikelihood as NegativeLogLikelihood
from ovdiv.metrics.accumulators import PairwiseCorrectness as PairwiseCorrectness
from ovdiv.metrics.accumulators import PredictionDisagreement as PredictionDisagreement
from ovdiv.metrics.accumulators import ShannonEquitability as ShannonEquitability
from ovdiv.metrics.accumulators import TopKAccuracy as TopKAccuracy
from ovdiv.metrics.attribution import HASH_METHODS as HASH_METHODS
from ovdiv.metrics.attribution import attribution_diversity as attribution_diversity
from ovdiv.metrics.attribution import attribution_diversity_from_ssd as attribution_diversity_from_ssd
from ovdiv.metrics.attribution import attribution_rmse as attribution_rmse
from ovdiv.metrics.attribution import channel_max as channel_max
from ovdiv.metrics.attribution import hash_distances as hash_distances
from ovdiv.metrics.attribution import image_hashes as image_hashes
from ovdiv.metrics.attribution import normalize_attributions as normalize_attributions
from ovdiv.metrics.attribution import pairwise_ssd as pairwise_ssd
from ovdiv.metrics.attribution import to_uint8_image as to_uint8_image
from ovdiv.metrics.calibration import ece_bin_stats as ece_bin_stats
from ovdiv.metrics.calibration import ece_from_bin_stats as ece_from_bin_stats
from ovdiv.metrics.calibration import expected_calibration_error as expected_calibration_error
from ovdiv.metrics.calibration import nll as nll
from ovdiv.metrics.calibration import nll_from_logits as nll_from_logits
from ovdiv.metrics.cka import MinibatchCKA as MinibatchCKA
from ovdiv.metrics.cka import hsic_unbiased as hsic_unbiased
from ovdiv.metrics.cka import linear_cka as linear_cka
from ovdiv.metrics.consensus import ensemble_label_rank as ensemble_label_rank
from ovdiv.metrics.consensus import ensemble_predict as ensemble_predict
from ovdiv.metrics.consensus import ensemble_probs as ensemble_probs
from ovdiv.metrics.consensus import ensemble_scores as ensemble_scores
from ovdiv.metrics.consensus import ensemble_topk_accuracy as ensemble_topk_accuracy
from ovdiv.metrics.consensus import improvement as improvement
from ovdiv.metrics.consensus import improvement_vs_mean as improvement_vs_mean
from ovdiv.metrics.consensus import label_rank as label_rank
from ovdiv.metrics.consensus import log_softmax as log_softmax
from ovdiv.metrics.consensus import logsumexp as logsumexp
from ovdiv.metrics.consensus import member_topk_accuracy as member_topk_accuracy
from ovdiv.metrics.consensus import softmax as softmax
from ovdiv.metrics.consensus import tie_priority as tie_priority
from ovdiv.metrics.consensus import topk_accuracy as topk_accuracy
from ovdiv.metrics.correlation import STUDY_METRICS as STUDY_METRICS
from ovdiv.metrics.correlation import correlation_study as correlation_study
from ovdiv.metrics.correlation import pearson as pearson
from ovdiv.metrics.correlation import spearman as spearman
from ovdiv.metrics.evidence import SubsetEvidence as SubsetEvidence
from ovdiv.metrics.evidence import correlation_evidence as correlation_evidence
from ovdiv.metrics.evidence import subset_bootstrap as subset_bootstrap
from ovdiv.metrics.evidence import subset_evidence as subset_evidence
from ovdiv.metrics.feature_hashes import FEATURE_HASH_METHODS as FEATURE_HASH_METHODS
from ovdiv.metrics.feature_hashes import HASH_BITS as HASH_BITS
from ovdiv.metrics.feature_hashes import feature_hash_bits as feature_hash_bits
from ovdiv.metrics.feature_hashes import sibling_hash_distances as sibling_hash_distances
from ovdiv.metrics.intervals import Interval as Interval
from ovdiv.metrics.intervals import binomial_interval as binomial_interval
from ovdiv.metrics.intervals import bootstrap_interval as bootstrap_interval
from ovdiv.metrics.intervals import bootstrap_sums as bootstrap_sums
from ovdiv.metrics.intervals import bootstrap_weights as bootstrap_weights
from ovdiv.metrics.intervals import clopper_pearson as clopper_pearson
from ovdiv.metrics.intervals import mcnemar as mcnemar
from ovdiv.metrics.intervals import mcnemar_from_counts as mcnemar_from_counts
from ovdiv.metrics.intervals import paired_bootstrap as paired_bootstrap
from ovdiv.metrics.intervals import paired_difference as paired_difference
from ovdiv.metrics.intervals import wilson as wilson
from ovdiv.metrics.pairwise import Equitability as Equitability
from ovdiv.metrics.pairwise import correctness as correctness
from ovdiv.metrics.pairwise import correctness_tables as correctness_tables
from ovdiv.metrics.pairwise import correlation as correlation
from ovdiv.metrics.pairwise import disagreement as disagreement
from ovdiv.metrics.pairwise import double_fault as double_fault
from ovdiv.metrics.pairwise import kl_divergence as kl_divergence
from ovdiv.metrics.pairwise import kl_divergence_from_logits as kl_divergence_from_logits
from ovdiv.metrics.pairwise import pair_mean as pair_mean
from ovdiv.metrics.pairwise import pdr as pdr
from ovdiv.metrics.pairwise import q_statistic as q_statistic
from ovdiv.metrics.pairwise import shannon_equitability as shannon_equitability
from ovdiv.metrics.pairwise import shannon_equitability_per_sample as shannon_equitability_per_sample
from ovdiv.metrics.pool import ENSEMBLE_METRICS as ENSEMBLE_METRICS
from ovdiv.metrics.pool import PoolStats as PoolStats
from ovdiv.metrics.pool import score_subsets as score_subsets
from ovdiv.metrics.subsets import SubsetStats as SubsetStats
