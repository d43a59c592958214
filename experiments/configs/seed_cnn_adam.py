"""The seed CNN with the default recipe: Adam 1e-3, cosine decay, 30 epochs, batch 64, augmentation, device pipeline.

Command:
    python -m experiments.run seed_cnn_adam --seeds 3
    python -m experiments.run seed_cnn_adam --quick          # smoke run on a subset, about a minute on CPU
    (one seed of it, written to results/seed_cnn.json:
    `fer-jax train --data ../shared/datasets/fer2013.zip --set data.pipeline=device --results results/seed_cnn.json`)

Expected runtime: CPU (2-core AMD EPYC, nothing else running): about 150 s an epoch, 76 minutes for the
30 epochs. GPU: not measured yet.
Expected result: PrivateTest 0.6375 (flip TTA 0.6411) for seed 0, selected on PublicTest (0.6247, epoch
26): results/seed_cnn.json. Other seeds: not measured yet.
"""

from fer_jax.config import Config


def get_config() -> Config:
    config = Config()  # the defaults in fer_jax/config.py are this recipe
    config.data.pipeline = "device"  # as `make train FULL=1`
    return config
