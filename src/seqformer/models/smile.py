"""A classifier on openSMILE functionals: the hand-crafted-feature baseline of audio
classification (``model.kind: opensmile`` in ``task: audio-classify``).

The input is one standardised vector of functionals per clip (``data/smile.py``: eGeMAPSv02's
88, GeMAPSv01b's 62 or ComParE_2016's 6,373), so the model is a plain multi-layer perceptron:
``hidden_sizes`` Linear + ReLU + dropout blocks, then a Linear to the labels. With no hidden
layer it is multinomial logistic regression (weight decay as its L2 penalty), the classic
paralinguistics baseline next to SVMs. Everything that learns the audio lives in openSMILE's
fixed signal processing, which is the point of the comparison with AST and HuBERT.

It takes the AST's :class:`~seqformer.models.audio.AudioBatch` (``features`` (batch,
num_features)) and returns BERT's :class:`~seqformer.models.bert.EncoderOutput`, so the shared
Trainer, ``tasks/classify.py`` and the audio task treat it like the AST. Saved with ``family:
smile-classify``, the label names and ``features`` (extractor settings and the training
split's mean / std), so a run goes from WAV to label on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from seqformer.data.smile import FEATURE_SETS, check_feature_set
from seqformer.errors import ConfigError
from seqformer.models.audio import AudioBatch
from seqformer.models.bert import EncoderOutput, encoder_loss
from seqformer.models.common import SavedClassifier, check_label_names

FAMILY = "smile-classify"


@dataclass(frozen=True)
class SmileClassifierConfig:
    """``feature_set`` (the openSMILE functionals read), ``hidden_sizes`` (an empty list:
    logistic regression) and ``dropout`` after each hidden layer. ``num_features`` is the
    feature set's size (0 in a recipe: filled in); ``num_labels`` comes from the data."""

    feature_set: str = "eGeMAPSv02"
    num_features: int = 0
    hidden_sizes: list[int] = field(default_factory=lambda: [128])
    dropout: float = 0.2
    num_labels: int = 2

    def __post_init__(self) -> None:
        check_feature_set(self.feature_set)
        width = FEATURE_SETS[self.feature_set]
        if self.num_features == 0:
            object.__setattr__(self, "num_features", width)  # derived from feature_set
        if self.num_features != width:
            raise ConfigError(f"model.num_features={self.num_features}, but {self.feature_set} "
                              f"gives {width} functionals")
        if any(not isinstance(h, int) or isinstance(h, bool) or h < 1
               for h in self.hidden_sizes):
            raise ConfigError(f"model.hidden_sizes must be positive integers ([] for logistic "
                              f"regression), got {self.hidden_sizes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.num_labels < 2:
            raise ConfigError(f"model.num_labels must be >= 2, got {self.num_labels}")


class SmileClassifier(nn.Module, SavedClassifier):
    """[Linear -> ReLU -> Dropout] x len(hidden_sizes) -> Linear, on standardised functionals."""

    family = FAMILY
    description = "an openSMILE-functionals classifier"
    config_class = SmileClassifierConfig
    settings_key = "features"

    def __init__(self, config: SmileClassifierConfig, labels: list[str] | None = None) -> None:
        super().__init__()
        self.config = c = config
        self.labels = check_label_names(labels, config.num_labels)
        self.head_kind = "classify"
        layers: list[nn.Module] = []
        width = c.num_features
        for hidden in c.hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(c.dropout)]
            width = hidden
        self.hidden_layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, c.num_labels)

    def logits(self, features: Tensor) -> Tensor:
        """(batch, num_features) standardised functionals -> (batch, num_labels)."""
        if features.dim() != 2 or features.shape[1] != self.config.num_features:
            raise ValueError(f"expected features (batch, {self.config.num_features}), got "
                             f"{tuple(features.shape)}")
        return self.classifier(self.hidden_layers(features))

    def forward(self, batch: AudioBatch) -> EncoderOutput:
        logits = self.logits(batch.features)
        loss = encoder_loss("classify", logits, batch.labels)
        # No per-position states: ``hidden`` is the empty (batch, 0) tensor, as for the CNN.
        return EncoderOutput(loss, loss.detach(), logits, logits.new_zeros(len(logits), 0),
                             len(batch))
