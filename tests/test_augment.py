"""The on-device augmentation (fer_jax.data.augment) against torchvision's transform of the reference pipeline."""

import jax
import jax.numpy as jnp
import pytest
import torch
import torchvision.transforms.v2.functional as F

from fer_jax.config import DataConfig
from fer_jax.data.augment import affine, augment, sample_params


def random_faces(count: int) -> torch.Tensor:
    return torch.randint(0, 256, (count, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "angle, scale, shift, flip",
    [
        (7.3, 1.0, (0, 0), False),
        (0.0, 1.08, (0, 0), False),
        (-9.1, 0.93, (3, -2), False),
        (5.0, 1.05, (1, 2), True),
        (0.0, 1.0, (0, 0), True),
    ],
)
@pytest.mark.slow
def test_affine_gives_torchvisions_pixels_for_the_same_parameters(angle, scale, shift, flip):
    faces = random_faces(2)
    expected = F.affine(faces, angle=angle, translate=list(shift), scale=scale, shear=[0.0, 0.0])
    if flip:
        expected = F.horizontal_flip(expected)
    ours = affine(
        jnp.asarray(faces),
        jnp.full((2,), angle),
        jnp.full((2,), scale),
        jnp.tile(jnp.asarray(shift, jnp.float32), (2, 1)),
        jnp.full((2,), flip),
    )
    same = jnp.mean(ours == jnp.asarray(expected))
    assert same >= 0.995, f"{float(same):.4f} of pixels equal"  # rounding ties of float32 coordinates may differ


@pytest.mark.slow
def test_parameters_are_drawn_from_the_configured_ranges():
    config = DataConfig(rotation_degrees=10.0, zoom=0.1, translate=0.1)
    params = sample_params(jax.random.key(0), 20_000, 48, config)
    assert -10 <= float(params["angle"].min()) < -9.9 and 9.9 < float(params["angle"].max()) <= 10
    assert 0.9 <= float(params["scale"].min()) < 0.901 and 1.099 < float(params["scale"].max()) <= 1.1
    assert float(jnp.abs(params["shift"]).max()) == round(0.1 * 48)
    assert abs(float(params["flip"].mean()) - 0.5) < 0.02
    assert float(jnp.abs(params["angle"].mean())) < 0.2  # uniform, centred


@pytest.mark.slow
def test_random_augmentation_matches_torchvision_in_distribution():
    """Per-pixel means of many augmented copies of one face agree with torchvision's RandomAffine + flip."""
    config = DataConfig()
    face = random_faces(1)
    count = 2000
    ours = augment(jax.random.key(1), jnp.broadcast_to(jnp.asarray(face), (count, 48, 48)), config)
    from fer_jax.data.fer2013 import train_transform

    torch.manual_seed(1)
    transform = train_transform(config)
    theirs = torch.stack([transform(face) for _ in range(count)])[:, 0]
    ours_mean = ours.astype(jnp.float32).mean(0)
    theirs_mean = jnp.asarray(theirs.float().mean(0))
    # Pixel values have std ~74; the mean of 2000 draws of a pixel varies by ~74 * sqrt(2 / 2000) ~ 2.3.
    assert float(jnp.abs(ours_mean - theirs_mean).mean()) < 2.5
    assert float(jnp.mean(ours == 0)) == pytest.approx(float((theirs == 0).float().mean()), abs=0.01)


@pytest.mark.slow
def test_augment_off_is_identity_and_flip_only_mirrors():
    faces = jnp.asarray(random_faces(4))
    assert (augment(jax.random.key(0), faces, DataConfig(augment=False)) == faces).all()
    flips = augment(jax.random.key(0), faces, DataConfig(rotation_degrees=0.0, zoom=0.0))
    for original, out in zip(faces, flips):
        assert (out == original).all() or (out == original[:, ::-1]).all()


@pytest.mark.parametrize("interpolation, fill", [("bilinear", "zero"), ("bilinear", "edge"), ("nearest", "edge")])
@pytest.mark.parametrize("angle, scale, shift, flip", [(7.3, 0.93, (2, -1), False), (-9.5, 1.1, (0, 3), True)])
def test_interpolation_and_fill_give_torchvisions_pixels(interpolation, fill, angle, scale, shift, flip):
    """One draw through the reference transform (fer_jax.data.fer2013.train_transform) and on the device."""
    from fer_jax.data.fer2013 import EDGE_PAD

    faces = random_faces(2)
    # fill=0 as RandomAffine passes it (F.affine's own default, None, mixes the border differently).
    options = dict(
        angle=angle,
        translate=list(shift),
        scale=scale,
        shear=[0.0, 0.0],
        interpolation=F.InterpolationMode(interpolation),
        fill=0,
    )
    if fill == "edge":  # what train_transform does for edge fill: pad, transform about the same centre, crop
        expected = F.center_crop(F.affine(F.pad(faces, [EDGE_PAD], padding_mode="edge"), **options), [48, 48])
    else:
        expected = F.affine(faces, **options)
    if flip:
        expected = F.horizontal_flip(expected)
    ours = affine(
        jnp.asarray(faces),
        jnp.full((2,), angle),
        jnp.full((2,), scale),
        jnp.tile(jnp.asarray(shift, jnp.float32), (2, 1)),
        jnp.full((2,), flip),
        interpolation,
        fill,
    )
    difference = jnp.abs(ours.astype(jnp.int32) - jnp.asarray(expected).astype(jnp.int32))
    assert float(jnp.mean(difference == 0)) >= 0.99 and int(difference.max()) <= 1  # float32 rounding ties
    if fill == "edge":
        assert float(jnp.mean(ours == 0)) < 0.01  # nothing zero-filled (random faces are rarely 0)


@pytest.mark.slow
def test_bilinear_edge_fill_agrees_with_train_transform_in_distribution():
    from fer_jax.data.fer2013 import train_transform

    config = DataConfig(interpolation="bilinear", fill="edge", translate=0.1)
    face = random_faces(1)
    count = 1000
    ours = augment(jax.random.key(2), jnp.broadcast_to(jnp.asarray(face), (count, 48, 48)), config)
    torch.manual_seed(2)
    transform = train_transform(config)
    theirs = torch.stack([transform(face) for _ in range(count)])[:, 0]
    assert float(jnp.abs(ours.astype(jnp.float32).mean(0) - jnp.asarray(theirs.float().mean(0))).mean()) < 3.5
    assert float(jnp.mean(ours == 0)) == pytest.approx(float((theirs == 0).float().mean()), abs=0.01)


def test_unknown_interpolation_or_fill_is_one_line():
    from fer_jax.config import ConfigError
    from fer_jax.data.fer2013 import train_transform

    with pytest.raises(ConfigError, match="data.fill must be one of 'zero', 'edge', got 'reflect'"):
        train_transform(DataConfig(fill="reflect"))
    with pytest.raises(ConfigError, match="data.interpolation"):
        augment(jax.random.key(0), jnp.zeros((1, 48, 48), jnp.uint8), DataConfig(interpolation="cubic"))
