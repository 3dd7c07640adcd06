import numpy as np
import pytest
import torch

from cifar_resnet.config import validate_params
from cifar_resnet.training import build_image_transform, crop_flip_batch, cutmix, derive_seed, mix_batch, mixup


def augment(**overrides):
    """Augment params with everything off unless overridden."""
    off = {"crop_padding": 0, "hflip": False}
    return validate_params({"train": {"augment": {**off, **overrides}}}).train.augment


IDENTITY = ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])  # normalisation that only rescales to 0..1


def half_white():
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:, :16] = 255
    return image


def draws(transform, image, n=40):
    outputs = []
    for i in range(n):
        transform.set_random_seed(i)
        outputs.append(transform(image=image)["image"])
    return np.stack(outputs)


def test_everything_off_only_normalises():
    out = draws(build_image_transform(augment(), [0.5] * 3, [0.5] * 3), half_white(), n=3)
    assert np.allclose(out[:, 0, 0], 1.0) and np.allclose(out[:, 0, -1], -1.0)


def test_flip_moves_the_white_half_in_about_half_the_draws():
    out = draws(build_image_transform(augment(hflip=True), *IDENTITY), half_white())
    flipped = out[:, 0, -1, 0] == 1.0
    assert 8 < flipped.sum() < 32


@pytest.mark.parametrize("border, corner", [("constant", 0.0), ("reflect", None)])
def test_pad_and_crop_shift_the_image_with_the_chosen_border(border, corner):
    image = np.full((32, 32, 3), 255, dtype=np.uint8)
    out = draws(build_image_transform(augment(crop_padding=4, border_mode=border), *IDENTITY), image)
    assert out.shape == (40, 32, 32, 3)
    if corner is not None:  # zero padding shows up as black strips in shifted crops
        assert (out == corner).any()
    else:  # reflecting a white image stays white
        assert np.all(out == 1.0)


def test_affine_changes_images_only_with_probability_p():
    image = half_white()
    never = draws(build_image_transform(augment(affine={"p": 0.0}), *IDENTITY), image)
    always = draws(build_image_transform(augment(affine={"p": 1.0, "rotate": 30.0}), *IDENTITY), image)
    assert np.all(never == image / 255.0)
    changed = [not np.allclose(o, image / 255.0) for o in always]
    assert sum(changed) >= 35


def test_erasing_punches_a_hole_or_adds_noise():
    image = np.full((32, 32, 3), 128, dtype=np.uint8)
    out = draws(build_image_transform(augment(erasing={"p": 1.0, "hole_min": 8, "hole_max": 8}), [0.0] * 3, [1.0] * 3), image)
    flat = np.isclose(out, 128 / 255.0)
    # Either a hole filled with the (zero) mean, 8x8 pixels, or noise touching most pixels.
    holes = [np.isclose(o, 0.0).all(axis=2).sum() == 64 for o in out]
    noisy = [(~f).mean() > 0.5 for f in flat]
    assert all(h or n for h, n in zip(holes, noisy))
    assert any(holes) and any(noisy)


def test_crop_flip_batch_shifts_within_the_padding_and_flips():
    images = torch.arange(32, dtype=torch.float32).repeat(8, 3, 32, 1)  # column index as value
    out = crop_flip_batch(images, padding=0, hflip=True, border_mode="constant", seed=3)
    flipped = out[:, 0, 0, 0] == 31
    assert flipped.any() and (~flipped).any()
    assert torch.equal(out[~flipped], images[~flipped])
    shifted = crop_flip_batch(images, padding=4, hflip=False, border_mode="replicate", seed=3)
    offsets = shifted[:, 0, 0, 10] - 10  # the shift of each crop, in columns
    assert shifted.shape == images.shape and offsets.abs().max() <= 4 and (offsets != 0).any()
    again = crop_flip_batch(images, padding=4, hflip=True, border_mode="reflect", seed=3)
    assert torch.equal(again, crop_flip_batch(images, padding=4, hflip=True, border_mode="reflect", seed=3))


def test_cutmix_mixes_labels_in_proportion_to_pasted_pixels():
    n = 8
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 32, 32).contiguous()
    labels = torch.arange(n)
    for seed in range(20):
        mixed = cutmix(images, labels, alpha=1.0, rng=np.random.default_rng(seed))
        own = (mixed.images[:, 0] == images[:, 0]).float().mean(dim=(1, 2))
        moved = mixed.labels_b != labels
        # For every image whose partner differs, the share of its own pixels is exactly lam.
        assert torch.allclose(own[moved], torch.full_like(own[moved], mixed.lam), atol=1e-6)
        assert torch.equal(mixed.labels_a, labels)


def test_mixup_blends_images_with_lam():
    images, labels = torch.randn(6, 3, 32, 32), torch.arange(6)
    mixed = mixup(images, labels, alpha=0.4, rng=np.random.default_rng(0))
    partner = images[mixed.labels_b]  # labels are indices here
    assert torch.allclose(mixed.images, mixed.lam * images + (1 - mixed.lam) * partner, atol=1e-6)
    assert 0.0 <= mixed.lam <= 1.0


def test_mix_batch_follows_the_probabilities():
    cfg = augment(cutmix={"p": 0.3}, mixup={"p": 0.3})
    images, labels = torch.randn(4, 3, 32, 32), torch.arange(4)
    lams = [mix_batch(images, labels, cfg.cutmix, cfg.mixup, seed).lam for seed in range(300)]
    unchanged = sum(lam == 1.0 for lam in lams) / len(lams)
    assert 0.3 < unchanged < 0.5  # about 40% of batches untouched
    off = augment()
    assert all(mix_batch(images, labels, off.cutmix, off.mixup, s).lam == 1.0 for s in range(20))


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)
    assert len({derive_seed(1, e, i) for e in range(10) for i in range(10)}) == 100


def test_contradictory_mixing_shares_are_rejected():
    from cifar_resnet.errors import UserError

    with pytest.raises(UserError, match="exceeds 1"):
        augment(cutmix={"p": 0.7}, mixup={"p": 0.5})
