"""VGG with BatchNorm (Khaireddin & Chen 2021) from scratch with the full recipe, for one H100 in under 15 minutes.

Command:
    python -m experiments.run sota_vgg_bn --seeds 3 --data data/fer2013.zip     # the full run: 3 seeds on one GPU
    python -m experiments.run sota_vgg_bn --quick            # CPU smoke run: width 1/4, 2 epochs, a few minutes

Protocol: trained on Training only, the checkpoint selected on PublicTest only (the best EMA
weights over the epochs), PrivateTest read once, after training, by the evaluation of that one
checkpoint (`fer_jax.train.trainer`); results.json records `selected_on`, `reported_on`,
`test_accuracy` (no TTA) and `test_accuracy_tta` (flip TTA).

Recipe: that of sota_resnet18 (SGD Nesterov, warmup + cosine, weight decay 5e-4 on kernels,
label smoothing 0.1, EMA 0.999, rotation/zoom/shift/flip/erasing on the device, bfloat16), with
lr 0.05 (a 40M-parameter dense head; Khaireddin & Chen trained it at 0.01 with plateau decay for
300 epochs). The lr was not tuned: no GPU was available, and the CPU ablation used ResNet-18.

Expected runtime (an ESTIMATE from FLOPs, not measured): about 3 GFLOPs per training image
(0.47 GMACs in the convolutions, 0.04 in the head), 40% of ResNet-18's; at an assumed 10,000
images/s about 3 s an epoch, so 150 epochs in about 8 minutes a seed.
Expected result: NOT MEASURED YET: no GPU was available to this work. Khaireddin & Chen report
0.7328 PrivateTest with ten-crop TTA after 300 epochs.
"""

from experiments.configs import sota_resnet18
from fer_jax.config import Config

QUICK_OVERRIDES = sota_resnet18.QUICK_OVERRIDES


def get_config() -> Config:
    config = sota_resnet18.get_config()
    config.run_dir = "runs/sota_vgg_bn"
    config.model.name = "vgg_bn"
    config.optim.learning_rate = 0.05
    config.train.epochs = 150
    return config
