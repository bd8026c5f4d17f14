"""Pictures of models and runs: attention maps and training curves (matplotlib, files only)."""
