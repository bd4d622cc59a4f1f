"""One-student jobs: the shared settings, compress and evaluate."""
