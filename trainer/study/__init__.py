"""The instruments of the study: SE excitations per class and the
self-normalisation of the layers, read from a built network (probes), written
into a run's folder and drawn."""
