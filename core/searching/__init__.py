"""The Ray Tune search: its spec, preparation, trials, tuning, final stage and reruns."""
