"""The parts of main.py's training loop: the graph and session, the input
source, the passes over the data, the per-epoch callbacks, clean stops on
signals, and training on several machines."""
