"""A sweep of runs (experiments.py): their names, the results table and the
report that states the sweep's answer."""
