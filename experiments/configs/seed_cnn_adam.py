"""The seed CNN with the default recipe: Adam, constant lr 1e-4, 10 epochs, batch 64, augmentation.

Command:
    python -m experiments.run seed_cnn_adam --seeds 3
    python -m experiments.run seed_cnn_adam --quick          # smoke run on a subset, about a minute on CPU

Expected runtime: CPU (2-core AMD EPYC): about 5-6 minutes an epoch, an hour a seed (one run of
`make train FULL=1`, the same recipe, measured with other work on the machine). GPU: not measured yet.
Expected result (PrivateTest accuracy of the PublicTest-selected checkpoint): 0.353 for seed 0
(`results/seed_cnn.json`, one seed, CPU); mean ± std over seeds not measured yet.
"""

from fer_jax.config import Config


def get_config() -> Config:
    return Config()  # the defaults in fer_jax/config.py are this recipe
