"""Stage `gradcam`: class-activation maps for test images of every class, and how well they localise.

Writes, under --out: grid.png (`gradcam.images` test images, 2 per row: the first of each
class in class order, then the second of each, and so on) and images/NN_<true class>.png
(the same one per file, NN its place in the test set): each image beside its map blended over
it, titled with the predicted class, its confidence and the true class, under a colour bar,
the method and the layer; on shapes, the object's box and the map's peak are marked and
a legend says so. Maps are for the predicted class.

Writes --metrics: {"localisation": {"score", "chance", "images", "method", "layer"}}: the
fraction of the first `gradcam.score_images` test images whose map (for the true class)
peaks inside the object's box, and the fraction a random peak would score (mean box area).
Only datasets that record boxes (shapes) can be scored; otherwise, or with score_images 0,
it writes {"localisation": null}, so the declared output always exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import GradcamParams
from ..data import load_imageset
from ..fileio import atomic_dir, write_json


@dataclass(frozen=True)
class GradcamPaths:
    data: Path  # output folder of the split stage
    model: Path
    config: Path
    out: Path  # folder for grid.png and images/
    metrics: Path  # JSON for the localisation score


def run(cfg: GradcamParams, paths: GradcamPaths) -> None:
    # Imported here, after the params are validated: a bad params.yaml fails fast, without torch.
    from ..gradcam import feature_map_size, resolve_target_layer
    from ..gradcam_figures import explain_predictions, grid_positions, plot_cam_grid, save_cam_images
    from ..localisation import score_test_localisation
    from ..models import load_model

    model, config = load_model(paths.model, paths.config, device="cpu")
    target_layer = resolve_target_layer(cfg.target_layer, config.get("stem", "cifar"), config["arch"])
    map_h, map_w = feature_map_size(model, target_layer)  # a bad layer fails before any work
    test = load_imageset(paths.data / "test.npz", num_classes=len(config["classes"]))
    stats = (config["mean"], config["std"])

    # Maps and score are computed before anything is written, so a failure leaves no partial outputs.
    positions = grid_positions(test.labels, cfg.images)  # one per class first, not the first few files
    shown = test.subset(positions)
    cams, titles, names = explain_predictions(model, shown, *stats, config["classes"], target_layer, cfg.method,
                                              positions)
    localisation, found = score_test_localisation(model, test, *stats, cfg.score_images, target_layer, cfg.method)
    with atomic_dir(paths.out) as out:
        # Two (image, heat map) pairs per row keep the grid within half a 1400-pixel page.
        figure = {"boxes": shown.boxes, "method": cfg.method, "layer": target_layer}
        plot_cam_grid(shown.images, cams, titles, out / "grid.png", ncols=2, **figure)
        save_cam_images(out / "images", names, shown.images, cams, titles, **figure)
    write_json(paths.metrics, {"localisation": localisation})
    print(f"{cfg.method} on {target_layer} ({map_h}x{map_w} map) for {len(shown)} test images -> {paths.out}")
    print(f"{found} -> {paths.metrics}")
