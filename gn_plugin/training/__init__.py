"""One training run: building it from a config, the loop and its steps, checkpoints and the run directory."""
