"""Training: jitted Optax steps, the epoch loop, checkpoints, evaluation of a state on a split, and plots."""
