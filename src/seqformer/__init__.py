"""seqformer: sequence learning with Transformers, readable and tested against references."""

__version__ = "0.1.0"
