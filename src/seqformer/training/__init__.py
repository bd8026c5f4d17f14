"""Training: loss, learning-rate schedules, pickle-free checkpoints and the training loop."""

from seqformer.training.checkpoint import (
    atomic_write,
    load_training_state,
    load_weights,
    read_weights,
    save_training_state,
    save_weights,
)
from seqformer.training.loss import label_smoothed_cross_entropy
from seqformer.training.schedules import SCHEDULES, make_scheduler
from seqformer.training.trainer import TrainConfig, Trainer

__all__ = [
    "SCHEDULES",
    "TrainConfig",
    "Trainer",
    "atomic_write",
    "label_smoothed_cross_entropy",
    "load_training_state",
    "load_weights",
    "make_scheduler",
    "read_weights",
    "save_training_state",
    "save_weights",
]
