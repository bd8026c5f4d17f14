"""Evaluation metrics: BLEU/chrF for translation, PER/WER and edit distance for G2P."""

from seqformer.metrics.bleu import bleu, chrf
from seqformer.metrics.edit import edit_distance, error_rates, exact_match

__all__ = ["bleu", "chrf", "edit_distance", "error_rates", "exact_match"]
