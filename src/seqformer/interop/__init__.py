"""Weight-name mappings between seqformer models and other toolkits' checkpoints."""
