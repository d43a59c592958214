"""The seed CNN trained with SGD: momentum 0.9 (Nesterov), lr 0.01, cosine decay; otherwise the default recipe.

Command:
    python -m experiments.run seed_cnn_sgd --seeds 3
    python -m experiments.run seed_cnn_sgd --quick

Expected runtime: CPU (2-core AMD EPYC): not measured yet. GPU: not measured yet.
Expected result (PrivateTest accuracy of the PublicTest-selected checkpoint, mean ± std over seeds):
not measured yet.
"""

from fer_jax.config import Config


def get_config() -> Config:
    config = Config()
    config.optim.name = "sgd"
    config.optim.learning_rate = 0.01
    config.optim.momentum = 0.9
    config.optim.nesterov = True
    config.optim.schedule = "cosine"
    return config
