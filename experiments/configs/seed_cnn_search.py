"""The seed CNN's recipe search: 5-epoch variants on the full training set, compared on PublicTest.

Command:
    python -m experiments.ablation seed_cnn_search --scale none --out results/seed_cnn_search.json --continue

Each variant trains the seed network (architecture unchanged) for 5 epochs on all 28,709 Training
faces with the on-device pipeline, and is compared on PublicTest only (PrivateTest is not read to
choose a recipe). A cosine schedule decays to 0 at the end of the 5 epochs: a short-schedule stand-in
for the same schedule over a full run. `--continue` keeps the variants already measured.

Expected runtime: CPU (2-core AMD EPYC): about 2 minutes an epoch with the machine to itself, so about 11
minutes a variant; the measured variants took 18-30 minutes each with other work on the machine.
Expected result: see results/seed_cnn_search.json and the README's recipe table.
"""

from fer_jax.config import Config

VARIANTS: dict[str, list[str]] = {
    "seed: adam 1e-4 constant": ["optim.learning_rate=1e-4", "optim.schedule=constant"],
    "adam 1e-3 constant": ["optim.learning_rate=1e-3", "optim.schedule=constant"],
    "adam 1e-3 cosine": ["optim.learning_rate=1e-3", "optim.schedule=cosine"],
    "sgd 0.01 cosine": ["optim.name=sgd", "optim.learning_rate=0.01", "optim.schedule=cosine"],
    "adam 1e-3 cosine, bilinear + edge fill": [
        "optim.learning_rate=1e-3",
        "optim.schedule=cosine",
        "data.interpolation=bilinear",
        "data.fill=edge",
    ],
    "adam 1e-3 cosine batch 128": ["optim.learning_rate=1e-3", "optim.schedule=cosine", "train.batch_size=128"],
    "adam 3e-4 cosine": ["optim.learning_rate=3e-4", "optim.schedule=cosine"],
    "sgd 0.05 cosine": ["optim.name=sgd", "optim.learning_rate=0.05", "optim.schedule=cosine"],
    "adam 1e-3 warmup 1 + cosine": ["optim.learning_rate=1e-3", "optim.schedule=cosine", "optim.warmup_epochs=1"],
    "sgd-n 0.05 one-cycle + LS 0.1": [
        "optim.name=sgd",
        "optim.learning_rate=0.05",
        "optim.schedule=linear",
        "optim.warmup_epochs=0.5",
        "optim.weight_decay=5e-4",
        "optim.label_smoothing=0.1",
    ],
    "adam 1e-3 one-cycle + LS 0.1": [
        "optim.learning_rate=1e-3",
        "optim.schedule=linear",
        "optim.warmup_epochs=0.5",
        "optim.label_smoothing=0.1",
    ],
}
"""Variant name -> overrides of `get_config()`; the first row is the seed's original recipe."""


def get_config() -> Config:
    config = Config()
    config.train.epochs = 5
    config.train.patience = 0
    config.data.pipeline = "device"
    return config
