"""What evaluate.py, predict.py and export.py share: a trained run found by
its name, what its network knows of its data, the network as a function of
raw pixels, and the evaluation of a split."""
