"""The seed CNN with the default recipe: Adam, constant lr 1e-4, 10 epochs, batch 64, augmentation.

Command:
    python -m experiments.run seed_cnn_adam --seeds 3
    python -m experiments.run seed_cnn_adam --quick          # smoke run on a subset, about a minute on CPU

Expected runtime: CPU (2-core AMD EPYC, on-device pipeline, nothing else running): about 2 minutes
an epoch. GPU: not measured yet.
Expected result: not measured on the corrected archive yet. The 5-epoch run of this recipe in the
recipe search reached PublicTest 0.486 (results/seed_cnn_search.json); the runs on the archive
shared before 2026-12-01 (blurred Training faces) are void.
"""

from fer_jax.config import Config


def get_config() -> Config:
    return Config()  # the defaults in fer_jax/config.py are this recipe
