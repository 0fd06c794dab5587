"""The machinery behind the user's files: configuration keys and their checks
(settings), datasets (loaders, download, input_pipeline), the training graph,
its passes and the per-epoch callbacks of main.py's loop, a run's folder and
checkpoints (runs, history, safe_io), stopping cleanly (interruption), and
scaling out (replicas, cluster). Nothing here is edited by a user: the knobs
are in constant.py."""
