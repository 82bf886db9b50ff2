"""Training hopstack's own CPU-fast models from a dataset's train split (``hopstack train``)."""
