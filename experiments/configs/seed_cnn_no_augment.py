"""The default recipe without data augmentation (no rotation, zoom or flip): how much augmentation buys.

Command:
    python -m experiments.run seed_cnn_no_augment --seeds 3
    python -m experiments.run seed_cnn_no_augment --quick

Expected runtime: CPU (2-core AMD EPYC): not measured yet. GPU: not measured yet.
Expected result (PrivateTest accuracy of the PublicTest-selected checkpoint, mean ± std over seeds):
not measured yet.
"""

from fer_jax.config import Config


def get_config() -> Config:
    config = Config()
    config.data.augment = False
    return config
