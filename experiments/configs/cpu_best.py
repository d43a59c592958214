"""The best FER-2013 model this 2-core CPU trains from scratch in 2 hours: a narrow VGG with BatchNorm.

Command:
    python -m experiments.run cpu_best --data ../shared/datasets/fer2013.zip --results results/cpu_best.json
    fer-jax train --resume runs/cpu_best/<timestamp>/seed0 --results results/cpu_best.json   # after a crash
    python -m experiments.ablation cpu_best --scale none --set train.epochs=6 --out results/cpu_best_ablation.json \\
        --continue --data ../shared/datasets/fer2013.zip                              # the ablation

Network: `vgg_bn` at width 3/8 (24-48-96-192 channels, 4 stages at 48-24-12-6 px, a 1,536-wide
dense head; 5.7M parameters). Chosen, on the Winograd kernels of the time, by the candidates'
throughput and the ablation's equal-time rows: width 1/2 trained at 2/3 of the speed, 1/4 barely
faster than 3/8, ResNet-18 at width 1/4 at half. On XLA's own convolution (`results/throughput_cpu.json`,
2026-12-06) 3/8 runs 219 img/s, 1/4 404 (1.8x), 1/2 129 (0.59x), ResNet-18 x1/4 128: 55 epochs of 3/8
or 32 of 1/2 fit 2 hours.

Recipe: SGD with Nesterov momentum 0.9 at lr 0.05 (batch 64), half an epoch of linear warmup and
a linear decay to 0 (the one-cycle of the CIFAR-10 speedruns), weight decay 5e-4 on kernels,
label smoothing 0.1; augmentation on the device: rotation ±10°, zoom ±10%, shift ±10%, flip.
The ablation (`VARIANTS`, 6 epochs each, PublicTest only) measures each ingredient.

Protocol: trained on Training only, the checkpoint selected on PublicTest, PrivateTest read once
after training; results.json has `test_accuracy` (no TTA), `test_accuracy_tta` (flip) and
`test_accuracy_crops` (10 views: the face, 4 corner crops, and their mirror images).

Expected runtime: CPU (2-core AMD EPYC): 35 epochs in 104.5 minutes (153-202 s an epoch with PublicTest).
Expected result (`results/cpu_best.json`, one seed): PrivateTest 0.6860 (flip TTA 0.6949, 10-view TTA
0.6865), PublicTest 0.6851, best at the last epoch and still rising (train accuracy 0.756), so
a longer schedule should help; the 2013 winner's 0.7116 is not reached. Without the shift
(`--set data.translate=0`, the 6-epoch ablation's one clear gain; `results/cpu_best_noshift.json`):
PublicTest 0.6684, so the shift stays (it overfits: train accuracy 0.854); PrivateTest 0.6896.
With 44 epochs (`--set train.epochs=44`, results/cpu_best_44ep.json, 79.5 min on a faster evening):
PublicTest 0.6790, so 35 epochs stay; PrivateTest 0.6918 (flip TTA 0.7044, 10-view 0.6977).
With 50 epochs on XLA's own convolution (`--set train.epochs=50`, results/cpu_best_50ep.json, 2026-12-06,
114.6 min, 127-149 s an epoch after the first): PublicTest 0.6793, so 35 epochs and the shipped weights
stay; PrivateTest 0.6918 (flip TTA 0.7019, 10-view 0.7013).
Width 1/2 for 20 epochs instead (`--set model.width=0.5 --set train.epochs=20`,
results/cpu_best_x05_20ep.json, 2026-12-07, 104.5 min): PublicTest 0.6534, PrivateTest 0.6656: width 3/8 stays.
Seed 1 (`--set train.seed=1`, results/cpu_best_seed1.json, 104.9 min): PublicTest 0.6765, PrivateTest 0.6879
(flip TTA 0.7044): the seeds differ by 0.9 points of PublicTest. The central 40x40 crop (`--set
model.input_crop=40`) trains 1.45x faster and matched the recipe at 6 epochs (results/cpu_best_ablation_crop.json);
at 60 epochs (`--set model.input_crop=40 --set train.epochs=60`, results/cpu_best_crop40_60ep.json, 2026-12-07,
90 min on an AMD EPYC Zen 4, where `auto` meant bfloat16): PublicTest 0.6810, PrivateTest 0.6754 (flip TTA 0.6846):
the whole face stays.
In bfloat16 (`compute_dtype=auto` on an AVX512-BF16 CPU; results/cpu_best_bf16.json, 2026-12-07, Zen 4, 75.5 min):
PublicTest 0.6815, PrivateTest 0.6874 (flip TTA 0.6955): as float32, within the seed spread.
"""

from fer_jax.config import Config

VARIANTS: dict[str, list[str]] = {
    "recipe": [],
    "width 1/2 (same minutes)": ["model.width=0.5", "train.epochs=4"],
    "width 1/2 (same epochs)": ["model.width=0.5"],
    "adamw 1e-3": ["optim.name=adam", "optim.learning_rate=1e-3", "optim.weight_decay=0.05"],
    "sgd lr 0.02": ["optim.learning_rate=0.02"],
    "batch 128 at lr 0.1": ["train.batch_size=128", "optim.learning_rate=0.1"],
    "- label smoothing": ["optim.label_smoothing=0"],
    "+ EMA 0.999": ["train.ema_decay=0.999"],
    "+ mixup 0.2": ["data.mixup=0.2"],
    "+ random erasing 0.5": ["data.erasing=0.5"],
    "- shift": ["data.translate=0"],
    "cosine decay": ["optim.schedule=cosine"],
    "centre crop 40 (Khaireddin's input)": ["model.input_crop=40"],
    "recipe (seed 1)": ["train.seed=1"],
    "- shift (seed 1)": ["data.translate=0", "train.seed=1"],
}
"""Variant name -> overrides of `get_config()`; the ablation runs each with `--set train.epochs=6`."""


def get_config() -> Config:
    config = Config()
    config.run_dir = "runs/cpu_best"
    config.model.name = "vgg_bn"
    config.model.width = 0.375
    config.model.compute_dtype = "auto"  # bfloat16 on CPUs with AMX or AVX512-BF16 units, else float32
    config.data.pipeline = "device"
    config.data.rotation_degrees = 10.0
    config.data.zoom = 0.1
    config.data.translate = 0.1
    config.data.horizontal_flip = True
    config.optim.name = "sgd"
    config.optim.learning_rate = 0.05
    config.optim.momentum = 0.9
    config.optim.nesterov = True
    config.optim.schedule = "linear"
    config.optim.warmup_epochs = 0.5
    config.optim.weight_decay = 5e-4
    config.optim.label_smoothing = 0.1
    config.train.batch_size = 64
    config.train.epochs = 35  # 35 x 150-200 s (the measured range) = 88-117 min: under 2 hours through the drift
    config.train.patience = 0  # the schedule runs to its end; PublicTest still selects the best epoch
    config.train.crops_tta = True
    return config
