"""A network's prunable structure: channel groups, student plans, kernel sizes, masks,
measurements and channel ranking. Knows nothing of plugins' concrete classes."""
