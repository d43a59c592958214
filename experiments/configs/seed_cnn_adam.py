"""The seed CNN with the default recipe: Adam, lr 1e-3, cosine decay over 15 epochs, batch 64, augmentation.

Command:
    python -m experiments.run seed_cnn_adam --seeds 3
    python -m experiments.run seed_cnn_adam --quick          # smoke run on a subset, about a minute on CPU

Expected runtime: CPU (2-core AMD EPYC): not measured yet. GPU: not measured yet.
Expected result (PrivateTest accuracy of the PublicTest-selected checkpoint, mean ± std over seeds):
not measured yet.
"""

from fer_jax.config import Config


def get_config() -> Config:
    return Config()  # the defaults in fer_jax/config.py are this recipe
