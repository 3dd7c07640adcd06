"""Grad-CAM helpers: CAMs per method, layer lookup, figures, the localisation score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pytorch_grad_cam.utils.image import scale_cam_image

from cifar_resnet.errors import UserError
from cifar_resnet.figures import prediction_titles
from cifar_resnet.gradcam import CAM_METHODS, compute_cams, feature_map_size, resolve_layer, resolve_target_layer
from cifar_resnet.gradcam_figures import (
    cam_figure,
    grid_positions,
    overlay,
    overlay_filename,
    plot_cam_grid,
    save_cam_images,
)
from cifar_resnet.localisation import chance_level, localisation_score, measure_localisation, peak_in_box, peak_locations
from cifar_resnet.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread: see conftest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    # Tiny on purpose: ScoreCAM runs one forward pass per channel of the target layer.
    return build_model("resnet18", 4, width=8, blocks=[1, 1, 1, 1])


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_compute_cams_shape_range_and_model_untouched(model: torch.nn.Module, method: str) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cams = compute_cams(model, torch.randn(2, 3, 32, 32), target_layer="layer4", method=method)
    assert cams.shape == (2, 32, 32) and cams.dtype == np.float32
    assert np.isfinite(cams).all() and cams.min() >= 0.0 and cams.max() <= 1.0
    assert model.training and _hooks(model) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_compute_cams_with_targets_and_under_no_grad(model: torch.nn.Module) -> None:
    model.eval()
    inputs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # callers often are; gradients are re-enabled inside
        cams = compute_cams(model, inputs, target_layer="layer4.0.conv2", targets=[1, 3])
    assert cams.shape == (2, 32, 32) and not model.training
    with pytest.raises(ValueError, match="got 1 targets for 2 inputs"):
        compute_cams(model, inputs, targets=[1])
    with pytest.raises(UserError, match="gradcam"):
        compute_cams(model, inputs, method="lime")


def test_resolve_layer(model: torch.nn.Module) -> None:
    assert resolve_layer(model, "layer4") is model.layer4
    assert resolve_layer(model, "layer4.0.conv2") is model.layer4[0].conv2
    for bad in ["layer9", "layer4.7.conv2", ""]:
        with pytest.raises(UserError) as info:
            resolve_layer(model, bad)
        assert "layer4" in str(info.value) and "fc" in str(info.value)


@pytest.mark.parametrize("arch, stem", [("resnet18", "cifar"), ("resnet18", "imagenet"), ("resnet9", "cifar"), ("airbench", "cifar")])
def test_auto_target_layer_is_the_deepest_with_a_map(arch: str, stem: str) -> None:
    layer = resolve_target_layer("auto", stem, arch)
    blocks = [1, 1, 1, 1] if arch == "resnet18" else None
    model = build_model(arch, 4, width=8, blocks=blocks, stem=stem)
    assert min(feature_map_size(model, layer)) >= 2
    deeper = f"layer{int(layer[-1]) + 1}"
    if deeper != "layer5":  # the next stage has no map left, or there is none
        with pytest.raises(UserError, match="not a spatial feature map|unknown target layer"):
            feature_map_size(model, deeper)
    assert resolve_target_layer("layer2.0", stem, arch) == "layer2.0"  # explicit names pass through


def test_overlay_and_grid(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    cams = [rng.random((32, 32), dtype=np.float32) for _ in range(4)]
    blended = overlay(images[0], cams[0])
    assert blended.shape == (32, 32, 3) and blended.dtype == np.uint8
    path = tmp_path / "figs" / "gradcam.png"
    plot_cam_grid(images, cams, [f"pred: cat (0.9{i})\ntrue: dog" for i in range(4)], path, ncols=3)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 1000
    assert [p.name for p in path.parent.iterdir()] == ["gradcam.png"]


def test_peak_in_box_and_localisation_score() -> None:
    cams = np.zeros((2, 32, 32), dtype=np.float32)
    cams[0, 10, 20] = 1.0  # row (y) 10, column (x) 20
    cams[1, 5, 5] = 1.0
    boxes = np.array([[15, 8, 25, 12], [6, 6, 30, 30]])  # x0, y0, x1, y1
    assert peak_in_box(cams, boxes).tolist() == [True, False]
    assert localisation_score(cams, boxes) == 0.5
    # x1/y1 are exclusive: a peak on the far edge is outside.
    assert peak_in_box(cams[:1], np.array([[15, 8, 20, 12]])).tolist() == [False]
    assert peak_in_box(cams[:1], np.array([[15, 8, 21, 11]])).tolist() == [True]


def one_peak(y: int, x: int, size: int = 32) -> np.ndarray:
    """A (1, size, size) CAM that is 0 everywhere but 1 at row y, column x."""
    cam = np.zeros((1, size, size), dtype=np.float32)
    cam[0, y, x] = 1.0
    return cam


@pytest.mark.parametrize(
    "x, y, inside",
    [
        (10, 12, True),   # well inside
        (8, 12, True),    # on x0: inclusive
        (15, 12, True),   # on x1 - 1: the last column of the box
        (16, 12, False),  # on x1: exclusive
        (7, 12, False),   # just left of x0
        (10, 4, True),    # on y0: inclusive
        (10, 19, True),   # on y1 - 1
        (10, 20, False),  # on y1: exclusive
        (10, 3, False),   # just above y0
    ],
)
def test_peak_in_box_edges_are_half_open(x: int, y: int, inside: bool) -> None:
    box = np.array([[8, 4, 16, 20]])  # x0, y0, x1, y1: columns 8..15, rows 4..19
    assert peak_in_box(one_peak(y, x), box).tolist() == [inside]


def test_low_resolution_cams_are_mapped_onto_the_image() -> None:
    # A raw 4x4 layer4 map: cell (row 1, column 2) covers image columns 16..23 and rows 8..15.
    cams = np.zeros((1, 4, 4), dtype=np.float32)
    cams[0, 1, 2] = 1.0
    assert peak_locations(cams, image_size=(32, 32)).tolist() == [[20.0, 12.0]]
    assert peak_in_box(cams, np.array([[16, 8, 24, 16]])).tolist() == [True]
    # Compared in CAM cells rather than pixels, (2, 1) would wrongly land in this box.
    assert peak_in_box(cams, np.array([[0, 0, 4, 4]])).tolist() == [False]
    # Non-square images scale each axis on its own.
    assert peak_locations(cams, image_size=(16, 64)).tolist() == [[40.0, 6.0]]


def test_an_upsampled_edge_peak_counts_by_its_plateau_centre() -> None:
    # grad-cam's bilinear upsampling turns an edge cell into a 4x4 plateau of equal maxima
    # at the image corner; argmax alone would say (0.5, 0.5), outside a box starting at 1.
    raw = np.zeros((1, 4, 4), dtype=np.float32)
    raw[0, 0, 0] = 1.0
    upsampled = scale_cam_image(raw, (32, 32))
    assert peak_locations(upsampled).tolist() == [[2.0, 2.0]]
    box = np.array([[1, 1, 8, 8]])
    assert peak_in_box(upsampled, box).tolist() == peak_in_box(raw, box).tolist() == [True]


def test_a_flat_cam_localises_nothing() -> None:
    flat = np.zeros((2, 32, 32), dtype=np.float32)
    flat[1] = 0.5
    assert np.isnan(peak_locations(flat)).all()
    assert peak_in_box(flat, np.array([[0, 0, 32, 32]] * 2)).tolist() == [False, False]


def test_localisation_score_counts_hits() -> None:
    cams = np.concatenate([one_peak(5, 5), one_peak(5, 5), one_peak(30, 30), np.zeros((1, 32, 32), np.float32)])
    boxes = np.array([[0, 0, 10, 10]] * 4)
    assert localisation_score(cams, boxes) == 0.5  # two of four peaks inside; the flat CAM misses
    with pytest.raises(ValueError, match="at least one cam"):
        localisation_score(cams[:0], boxes[:0])
    with pytest.raises(ValueError, match=r"boxes \(N, 4\), got \(4, 32, 32\) and \(3, 4\)"):
        peak_in_box(cams, boxes[:3])


def test_chance_level_is_the_mean_box_share_of_the_image() -> None:
    assert chance_level(np.array([[0, 0, 32, 32], [0, 0, 16, 16]])) == (1.0 + 0.25) / 2
    assert chance_level(np.array([[0, 0, 8, 4]]), image_size=(8, 16)) == 0.25


def test_batched_cams_equal_one_batch(model: torch.nn.Module) -> None:
    inputs = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    whole = compute_cams(model, inputs, targets=[0, 1, 2, 3, 0], batch_size=64)
    batched = compute_cams(model, inputs, targets=[0, 1, 2, 3, 0], batch_size=2)
    np.testing.assert_allclose(batched, whole, atol=1e-5)
    assert _hooks(model) == 0


def test_measure_localisation_uses_the_true_class(model: torch.nn.Module) -> None:
    inputs = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    labels = [0, 1, 2, 3, 2, 1]
    boxes = np.array([[0, 0, 16, 16], [16, 0, 32, 16], [0, 16, 16, 32], [16, 16, 32, 32], [4, 4, 28, 28], [0, 0, 32, 8]])
    result = measure_localisation(model, inputs, labels, boxes, target_layer="layer3", method="gradcam", batch_size=4)
    # The same batches of 4: CAMs computed at another batch size differ in float rounding (other
    # kernels), which may move the peak of a near-flat CAM and so the score on another CPU.
    cams = compute_cams(model, inputs, "layer3", "gradcam", targets=labels, batch_size=4)
    expected = localisation_score(cams, boxes)
    # Box areas 256, 256, 256, 256, 576, 256 pixels of 1024.
    chance = (5 * 256 + 576) / 6 / 1024
    assert result == {"score": expected, "chance": chance, "images": 6, "method": "gradcam", "layer": "layer3"}


def test_feature_map_size_rejects_layers_without_a_spatial_map(model: torch.nn.Module) -> None:
    assert feature_map_size(model, "layer4") == (4, 4)
    assert feature_map_size(model, "layer2.0.conv1") == (16, 16)
    for bad in ["fc", "avgpool"]:
        with pytest.raises(UserError, match="not a spatial feature map"):
            feature_map_size(model, bad)
    assert model.training and _hooks(model) == 0


def test_one_overlay_file_per_image_with_boxes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    cams = rng.random((3, 32, 32), dtype=np.float32)
    boxes = np.array([[0, 0, 10, 10], [5, 5, 32, 32], [10, 2, 20, 30]], dtype=np.int32)
    names = [overlay_filename(i, c) for i, c in enumerate(["cat", "half-disc", "aquarium fish/2"])]
    assert names == ["00_cat.png", "01_half-disc.png", "02_aquarium-fish-2.png"]
    titles = [f"pred: cat (0.5{i})\ntrue: dog" for i in range(3)]
    paths = save_cam_images(tmp_path / "images", names, images, cams, titles, boxes=boxes)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(names)
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000
    plot_cam_grid(images, cams, titles, tmp_path / "grid.png", boxes=boxes)
    assert (tmp_path / "grid.png").stat().st_size > 1000
    # Two pairs per row: the grid and each file fit half a 1400-pixel `dvc plots diff` page.
    widths = [int.from_bytes(path.read_bytes()[16:20], "big") for path in [tmp_path / "grid.png", *paths]]
    assert max(widths) <= 680, widths
    with pytest.raises(ValueError, match="file names must be unique"):
        save_cam_images(tmp_path / "more", ["a.png", "a.png", "b.png"], images, cams, titles)
    with pytest.raises(ValueError, match="need as many images, cams, titles"):
        plot_cam_grid(images, cams, titles, tmp_path / "bad.png", boxes=boxes[:2])


def _png(fig) -> bytes:
    """Render `fig` (a bare Figure) to PNG bytes: drawing is where mathtext would fail."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def test_each_example_is_its_image_beside_its_map_with_colour_bar_legend_and_method() -> None:
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    cams = rng.random((3, 32, 32), dtype=np.float32)
    boxes = np.array([[0, 0, 10, 10], [5, 5, 32, 32], [10, 2, 20, 30]])
    fig = cam_figure(images, cams, ["a", "b", "c"], ncols=2, boxes=boxes, method="gradcam++", layer="layer3")
    pictures = [ax for ax in fig.get_axes() if ax.get_images()]
    assert len(pictures) == 6  # image and heat map per example
    # The left of each pair is the image itself, the right the map blended over it.
    for left, right, image, cam in zip(pictures[::2], pictures[1::2], images, cams):
        assert np.array_equal(left.get_images()[0].get_array(), image)
        assert np.array_equal(right.get_images()[0].get_array(), overlay(image, cam))
    assert any(ax.get_title() == "CAM" and not ax.get_images() for ax in fig.get_axes())  # the colour bar
    assert fig.get_suptitle() == "Grad-CAM++ at layer3, for the predicted class"
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["object's box (shapes dataset)", "CAM peak"]
    assert _png(fig)[:8] == PNG_MAGIC
    # Without boxes there is nothing to explain: no legend.
    assert not cam_figure(images, cams, ["a", "b", "c"], method="gradcam", layer="layer4").legends


def test_class_names_are_drawn_literally_not_as_mathtext() -> None:
    from matplotlib.cbook import is_math_text

    classes = ["a$b$c", r"x$\nosuch$"]  # unescaped, the second stops matplotlib with "Unknown symbol"
    titles = prediction_titles(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([1, 0]), classes)
    assert [t.replace(r"\$", "$") for t in titles] == ["pred: a$b$c (0.90)\ntrue: x$\\nosuch$",
                                                        "pred: x$\\nosuch$ (0.80)\ntrue: a$b$c"]
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    fig = cam_figure(images, np.zeros((2, 32, 32), dtype=np.float32), titles, method="gradcam", layer="layer4")
    assert _png(fig)[:8] == PNG_MAGIC
    drawn = [sub._suptitle.get_text() for sub in fig.subfigs[0].subfigs]
    assert drawn == titles and not any(is_math_text(text) for text in drawn)


def test_the_grid_shows_the_first_image_of_each_class_in_class_order():
    # Sorted files, as a folder of images is read: every airplane (0) before the first car (1).
    labels = [0] * 8 + [1] * 3 + [2] * 2
    assert grid_positions(labels, 3) == [0, 8, 11]
    assert grid_positions(labels, 2) == [0, 8]  # fewer images than classes: the first classes


def test_more_images_than_classes_fill_round_robin_and_never_repeat():
    labels = [2, 0, 0, 1, 0, 2, 1, 0]  # class order, not order of appearance
    assert grid_positions(labels, 6) == [1, 3, 0, 2, 6, 5]
    assert grid_positions(labels, 7) == [1, 3, 0, 2, 6, 5, 4]  # classes 1 and 2 run out: class 0 goes on
    assert grid_positions(labels, 64) == [1, 3, 0, 2, 6, 5, 4, 7]  # every image once, no more


def test_a_class_missing_from_the_test_set_is_skipped():
    labels = np.array([3, 3, 7, 3, 7], dtype=np.int64)
    assert grid_positions(labels, 3) == [0, 2, 1]
    assert grid_positions(np.array([], dtype=np.int64), 6) == []
