"""Built-in distillers: ``none``, ``hinton``, ``hint`` (FitNets) and ``attention``."""
