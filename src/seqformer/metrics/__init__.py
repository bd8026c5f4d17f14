"""Evaluation metrics: BLEU/chrF/TER (sacrebleu) for translation, ROUGE for summaries,
PER/WER/CER and edit distance for G2P and any text output."""

from seqformer.metrics.bleu import bleu, chrf, looks_tokenized, signatures, ter
from seqformer.metrics.edit import char_error_rate, edit_distance, error_rates, exact_match
from seqformer.metrics.rouge import rouge

__all__ = ["bleu", "char_error_rate", "chrf", "edit_distance", "error_rates", "exact_match",
           "looks_tokenized", "rouge", "signatures", "ter"]
