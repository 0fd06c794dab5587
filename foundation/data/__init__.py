"""The datasets in their official formats: reading them with bounded memory,
downloading them, the TFRecords' metadata, ImageNet's classes, image files,
and the tf.data pipeline that feeds a split into the graph."""
