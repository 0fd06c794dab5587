"""What the user's files (layers.py, Model.py, util.py, TFRecordsReader.py) stand
on: errors a user can fix, atomic writes, TensorFlow imported quietly, the
machine's devices, the dataset formats (data/) and what shapes a network
(networks/). Nothing here imports the user's files or trainer/."""
