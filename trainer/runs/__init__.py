"""A run on disk: its folder and lock, its records, its checkpoints and
history, restoring weights, and what it leaves when it stops early or the
disk fills."""
