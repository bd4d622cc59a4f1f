"""prunetune built-in plugins."""
