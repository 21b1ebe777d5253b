"""Experiment trackers a run reports to (``train.loggers``): TensorBoard built in, Weights & Biases and MLflow as extras."""
