"""Search spaces: define-by-run functions from an Optuna trial to a student plan."""
