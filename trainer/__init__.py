"""The machinery above the user's files: the checked config (config/), a
run's folder and checkpoints (runs/), the training loop's parts (training/),
the study's instruments (study/) and the commands after training
(after_training/). It imports the user's files; they never import it."""
