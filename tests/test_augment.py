import numpy as np
import pytest
import scipy.stats
import torch

from cifar_resnet.config import set_dotted, validate_params
from cifar_resnet.data.arrays import ImageSet
from cifar_resnet.errors import UserError
from cifar_resnet.training import build_image_transform, crop_flip_batch, cutmix, derive_seed, mix_batch, mixup
from cifar_resnet.training.feeding import AugmentedImages


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


# The cv2 border each mode names, as numpy spells it: an independent witness of what the padding adds.
NUMPY_PAD_MODE = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}  # BORDER_REFLECT_101 = reflect


@pytest.mark.parametrize("border", ["constant", "reflect", "replicate"])
def test_pad_and_crop_cut_windows_of_the_image_padded_with_the_chosen_border(border):
    # Random pixels: only the true offset into the padded image matches a draw, so a wrong border
    # or skipped padding (every draw the unshifted image) cannot pass.
    image = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode=NUMPY_PAD_MODE[border]) / 255.0
    out = draws(build_image_transform(augment(crop_padding=4, border_mode=border), *IDENTITY), image)
    offsets = []
    for drawn in out:
        matches = [(dy, dx) for dy in range(9) for dx in range(9)
                   if np.allclose(drawn, padded[dy:dy + 32, dx:dx + 32], atol=1e-6)]
        assert len(matches) == 1, matches
        offsets += matches
    assert len(set(offsets)) >= 10 and {0, 8} & {dy for dy, _ in offsets}  # shifted, some by the whole padding


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


def test_mixup_blends_each_image_with_a_shuffled_partner_by_a_beta_drawn_lam():
    images, labels = torch.randn(6, 3, 32, 32), torch.arange(6)
    lams = []
    for seed in range(200):
        mixed = mixup(images, labels, alpha=0.4, rng=np.random.default_rng(seed))
        assert sorted(mixed.labels_b.tolist()) == labels.tolist()  # the partners are the batch, shuffled
        partner = images[mixed.labels_b]  # labels are indices here
        assert torch.allclose(mixed.images, mixed.lam * images + (1 - mixed.lam) * partner, atol=1e-6)
        lams.append(mixed.lam)
    # lam ~ Beta(alpha, alpha), U-shaped for alpha < 1; scipy is the independent witness. A constant
    # lam, or a uniform one, gives p < 1e-5 here (the seeds are fixed: no flakiness).
    assert scipy.stats.kstest(lams, scipy.stats.beta(0.4, 0.4).cdf).pvalue > 0.01


def test_mix_batch_follows_the_probabilities():
    cfg = augment(cutmix={"p": 0.3}, mixup={"p": 0.3})
    images, labels = torch.randn(4, 3, 32, 32), torch.arange(4)
    lams = [mix_batch(images, labels, cfg.cutmix, cfg.mixup, seed).lam for seed in range(300)]
    unchanged = sum(lam == 1.0 for lam in lams) / len(lams)
    assert 0.3 < unchanged < 0.5  # about 40% of batches untouched
    off = augment()
    assert all(mix_batch(images, labels, off.cutmix, off.mixup, s).lam == 1.0 for s in range(20))


def test_derived_seeds_are_stable_and_distinct():
    # Pinned values: a run resumed in another process, or on another machine, must derive the
    # same seeds (numpy's SeedSequence hashes the integers; no Python hash() is involved).
    assert derive_seed(1, 2, 3) == 3822189696 and derive_seed(0, 1) == 3964924996
    assert len({derive_seed(1, e, i) for e in range(10) for i in range(10)}) == 100


def test_contradictory_mixing_shares_are_rejected():
    from cifar_resnet.errors import UserError

    with pytest.raises(UserError, match="exceeds 1"):
        augment(cutmix={"p": 0.7}, mixup={"p": 0.5})


# --- Batched (device) augmentation against albumentations and the parameters ---------------

def decompose(m: np.ndarray, size: int = 32) -> dict[str, np.ndarray]:
    """Translation (px), x/y scales and rotation (degrees) of forward matrices M = C T R S C^-1, shape (N, 3, 3)."""
    c = np.array([size / 2 - 0.5, size / 2 - 0.5])
    linear = m[:, :2, :2]
    shift = m[:, :2, 2] + linear @ c - c  # M applied to the centre, minus the centre
    return {"tx": shift[:, 0], "ty": shift[:, 1], "sx": np.linalg.norm(linear[:, :, 0], axis=1),
            "sy": np.linalg.norm(linear[:, :, 1], axis=1), "angle": np.degrees(np.arctan2(-linear[:, 1, 0], linear[:, 0, 0]))}


def albumentations_matrices(affine, n: int) -> np.ndarray:
    import albumentations as A

    transform = A.Affine(translate_percent=(-affine.translate, affine.translate), scale=(1 - affine.scale, 1 + affine.scale),
                         rotate=(-affine.rotate, affine.rotate), p=1.0)
    matrices = []
    for i in range(n):
        transform.set_random_seed(i)
        matrices.append(transform.get_params_dependent_on_data({"shape": (32, 32, 3)}, {})["matrix"])
    return np.stack(matrices)


def test_affine_parameters_match_albumentations_in_range_and_distribution():
    from cifar_resnet.training.augment import affine_matrices

    cfg = augment(affine={"p": 1.0, "translate": 0.1, "scale": 0.15, "rotate": 15.0}).affine
    ours = decompose(affine_matrices(400, 32, 32, cfg, torch.Generator().manual_seed(0)).numpy())
    theirs = decompose(albumentations_matrices(cfg, 400))
    # Whole-pixel shifts, |t| <= int(0.1 * 32) = 3, every value of the range drawn.
    for key in ("tx", "ty"):
        assert np.allclose(ours[key], np.round(ours[key]), atol=1e-9)
        assert set(np.round(ours[key]).astype(int)) == set(np.round(theirs[key]).astype(int)) == set(range(-3, 4))
    for key, low, high in (("sx", 0.85, 1.15), ("sy", 0.85, 1.15), ("angle", -15.0, 15.0)):
        assert ours[key].min() >= low - 1e-9 and ours[key].max() <= high + 1e-9
        assert ours[key].min() < low + 0.1 * (high - low) and ours[key].max() > high - 0.1 * (high - low)
    for key in ours:  # the same uniform distributions: means and spreads agree within sampling error
        spread = theirs[key].std()
        assert abs(ours[key].mean() - theirs[key].mean()) < 0.2 * spread, key
        assert abs(ours[key].std() - spread) < 0.15 * spread, key
    assert abs(np.corrcoef(ours["sx"], ours["sy"])[0, 1]) < 0.15  # independent scales (keep_ratio=False)


def smooth_image(n: int = 4, seed: int = 0) -> torch.Tensor:
    """Low-frequency 0..1 images, so that bilinear resampling differences stay small."""
    coarse = torch.rand(n, 3, 6, 6, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bicubic", align_corners=True).clamp(0, 1)


@pytest.mark.parametrize("border", ["constant", "reflect", "replicate"])
def test_warp_matches_cv2_warp_affine_with_each_border(border):
    import cv2

    from cifar_resnet.training.augment import BORDER_MODES, affine_matrices, warp_batch

    cfg = augment(affine={"p": 1.0, "translate": 0.2, "scale": 0.3, "rotate": 40.0}).affine
    matrices = affine_matrices(4, 32, 32, cfg, torch.Generator().manual_seed(1))
    images = smooth_image()
    ours = warp_batch(images, matrices, border).permute(0, 2, 3, 1).numpy()
    for image, matrix, out in zip(images.permute(0, 2, 3, 1).numpy(), matrices.numpy(), ours):
        expected = cv2.warpAffine(image, matrix[:2], (32, 32), flags=cv2.INTER_LINEAR,
                                  borderMode=BORDER_MODES[border][0], borderValue=0)
        # cv2 quantises sampling positions to 1/32 pixel: agreement to a fraction of a grey level.
        assert np.abs(out - expected).mean() < 2e-3 and np.abs(out - expected).max() < 0.03


def test_a_bright_dot_moves_as_the_drawn_translation_says():
    from cifar_resnet.training import affine_batch

    cfg = augment(affine={"p": 1.0, "translate": 0.1, "scale": 0.0, "rotate": 0.0}).affine
    images = torch.zeros(200, 1, 32, 32)
    images[:, :, 16, 16] = 1.0
    out = affine_batch(images, cfg, "constant", seed=5)
    flat = out.view(200, -1).argmax(dim=1)
    dy, dx = flat // 32 - 16, flat % 32 - 16
    assert torch.allclose(out.amax(dim=(1, 2, 3)), torch.ones(200))  # whole-pixel shifts: the dot stays sharp
    assert dx.abs().max() <= 3 and dy.abs().max() <= 3 and set(dx.tolist()) == set(range(-3, 4))


def changed_share(before: torch.Tensor, after: torch.Tensor) -> float:
    return float((before != after).flatten(1).any(dim=1).float().mean())


def test_affine_and_erasing_apply_with_probability_p():
    from cifar_resnet.training import affine_batch, erasing_batch

    images = smooth_image(400)
    warped = affine_batch(images, augment(affine={"p": 0.5}).affine, "reflect", seed=3)
    assert abs(changed_share(images, warped) - 0.5) < 0.08  # binomial sd 0.025 over 400 images
    erased = erasing_batch(images, augment(erasing={"p": 0.3}).erasing, [0.5] * 3, seed=3)
    assert abs(changed_share(images, erased) - 0.3) < 0.07
    assert torch.equal(affine_batch(images, augment(affine={"p": 0.0}).affine, "reflect", 3), images)


def holes_and_noise(out: torch.Tensor, base: float, fill: float):
    """Split erased constant images into hole (height, width) pairs and per-image noise stds."""
    holes, stds = [], []
    for image in out:
        filled = torch.isclose(image, torch.tensor(fill), atol=1e-6).all(dim=0)
        if filled.any():
            rows, cols = filled.any(dim=1).nonzero().flatten(), filled.any(dim=0).nonzero().flatten()
            height, width = len(rows), len(cols)
            assert int(filled.sum()) == height * width  # exactly one solid rectangle
            assert torch.allclose(image[:, ~filled], torch.tensor(base), atol=1e-6)  # and nothing else touched
            holes.append((height, width))
        else:
            stds.append(float((image - base).std()))
    return np.array(holes), np.array(stds)


def test_erasing_holes_and_noise_match_albumentations():
    from cifar_resnet.training import erasing_batch

    cfg = augment(erasing={"p": 1.0, "hole_min": 8, "hole_max": 16, "noise_std_min": 0.02, "noise_std_max": 0.05}).erasing
    fill = 0.2
    images = torch.full((300, 3, 32, 32), 0.5)
    holes, stds = holes_and_noise(erasing_batch(images, cfg, [fill] * 3, seed=11), 0.5, fill)
    assert abs(len(holes) / 300 - 0.5) < 0.1  # OneOf: even odds
    assert holes.min() == 8 and holes.max() == 16 and set(holes.flatten()) == set(range(8, 17))
    # Noise std per image within the range (3,072 samples: a 4% estimation margin; truncation
    # to whole grey levels takes up to about half a level off).
    assert stds.min() > 0.02 * 0.96 - 0.6 / 255 and stds.max() < 0.05 * 1.04
    assert 0.035 - 0.6 / 255 < stds.mean() < 0.035 + 0.001  # the midpoint of the range

    # The same statistics from the albumentations pipeline as training runs it (uint8, reseeded per image).
    pipeline = build_image_transform(augment(erasing=cfg.model_dump()), [fill] * 3, [1.0] * 3)
    dataset = AugmentedImages(ImageSet(np.full((300, 32, 32, 3), 128, np.uint8), np.zeros(300, np.int64)), pipeline, seed=0)
    reference = torch.stack([dataset[(1, i)][0] for i in range(300)])
    ref_holes, ref_stds = holes_and_noise(reference, 128 / 255 - fill, 0.0)  # the fill normalises to 0
    assert abs(holes.mean() - ref_holes.mean()) < 0.5 and abs(holes.std() - ref_holes.std()) < 0.5
    assert abs(stds.mean() - ref_stds.mean()) < 0.0015 and abs(stds.std() - ref_stds.std()) < 0.0015
    assert abs(len(holes) - len(ref_holes)) < 45


def test_batched_augmentation_is_repeatable_and_varies_with_the_seed():
    from cifar_resnet.training import augment_batch

    cfg = augment(crop_padding=4, hflip=True, border_mode="constant", affine={"p": 0.5}, erasing={"p": 0.5})
    images = smooth_image(16)
    first = augment_batch(images, cfg, [0.5] * 3, seed=derive_seed(1, 2, 0))
    assert torch.equal(first, augment_batch(images, cfg, [0.5] * 3, seed=derive_seed(1, 2, 0)))
    assert not torch.equal(first, augment_batch(images, cfg, [0.5] * 3, seed=derive_seed(1, 3, 0)))
    assert first.min() >= 0.0 and first.max() <= 1.0


def test_batched_augmentation_keeps_bf16_inputs_in_bf16():
    from cifar_resnet.training import augment_batch

    cfg = augment(crop_padding=4, hflip=True, affine={"p": 1.0}, erasing={"p": 1.0})
    out = augment_batch(smooth_image(8).bfloat16(), cfg, [0.5] * 3, seed=1)
    reference = augment_batch(smooth_image(8), cfg, [0.5] * 3, seed=1)
    assert out.dtype == torch.bfloat16 and out.device.type == "cpu"
    assert (out.float() - reference).abs().max() < 0.02  # bf16 rounding of 0..1 values only


def test_device_feeder_takes_seed_001s_full_recipe_and_resumes_exactly():
    import yaml

    from cifar_resnet.training import DeviceFeeder

    recipe = yaml.safe_load(open("recipes/seed001.yaml"))["set"]
    raw = {"train": {"data_on_device": True, "augment": {}}}
    for key, value in recipe.items():
        if key.startswith("train.augment."):
            set_dotted(raw, key, value)
    cfg = validate_params(raw).train  # no longer refused on the device path
    images = ImageSet(np.full((64, 32, 32, 3), 200, np.uint8), np.arange(64) % 10)
    mean, std = [0.5] * 3, [0.25] * 3
    make = lambda: DeviceFeeder(images, cfg.augment, mean, std, 16, seed=7, device=torch.device("cpu"))
    fed = make()
    for epoch in (1, 2):
        list(fed.epoch(epoch))
    after_two = list(fed.epoch(3))
    fresh = list(make().epoch(3))  # a resumed run starts at epoch 3 with nothing before it
    assert all(torch.equal(a.images, b.images) and torch.equal(a.labels_a, b.labels_a)
               and torch.equal(a.labels_b, b.labels_b) and a.lam == b.lam for a, b in zip(after_two, fresh))
    assert not torch.equal(after_two[0].images, next(make().epoch(4)).images)
    pixels = torch.cat([batch.images for batch in after_two]) * 0.25 + 0.5  # back to the 0..1 scale
    assert torch.isclose(pixels, torch.tensor(0.5)).any()  # holes filled with the mean
    assert (pixels.abs() < 1e-6).any()  # black constant border from crop and affine, as albumentations pads


def test_alternating_flips_mirror_a_random_half_then_the_other_half():
    from cifar_resnet.training import alternating_flips

    first, second, third = (alternating_flips(2000, seed=5, epoch=e) for e in (1, 2, 3))
    assert 900 < int(first.sum()) < 1100  # a random half
    assert torch.equal(second, ~first) and torch.equal(third, first)  # every image the other way each epoch
    assert not torch.equal(first, alternating_flips(2000, seed=6, epoch=1))


@pytest.mark.parametrize("on_device", [False, True], ids=["loader", "device"])
def test_hflip_alternate_shows_every_image_both_ways_in_two_epochs(on_device):
    """Both feeders mirror the same images: the ones alternating_flips names for the epoch."""
    from cifar_resnet.training import DeviceFeeder, LoaderFeeder, alternating_flips
    from cifar_resnet.training.feeding import epoch_order

    rng = np.random.default_rng(0)
    images = ImageSet(rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), np.arange(48) % 10)
    cfg = augment(hflip="alternate")
    assert cfg.hflip == "alternate"
    make = (lambda: DeviceFeeder(images, cfg, *IDENTITY, 16, seed=2, device=torch.device("cpu"))) if on_device \
        else (lambda: LoaderFeeder(images, cfg, *IDENTITY, 16, seed=2))
    source = torch.from_numpy(images.images).permute(0, 3, 1, 2).float() / 255
    for epoch in (0, 1, 2, 3):  # epoch 0: the benchmarks' warm-up epoch
        fed = torch.cat([batch.images for batch in make().epoch(epoch)])
        order = epoch_order(48, seed=2, epoch=epoch)
        flips = alternating_flips(48, seed=2, epoch=epoch)[order]
        expected = torch.where(flips[:, None, None, None], source[order].flip(3), source[order])
        assert torch.allclose(fed, expected, atol=1e-6)


def test_hflip_takes_true_false_or_alternate_only():
    assert augment(hflip=True).hflip is True and augment(hflip=False).hflip is False
    with pytest.raises(UserError, match="hflip"):
        augment(hflip="sometimes")
