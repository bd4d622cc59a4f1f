"""The public base of every plugin family (scorers, pruners, distillers, datasets, models,
search spaces, strategies) and what they share. Plugins import from here and below."""
