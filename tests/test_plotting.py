"""Training curves: the history read from dvclive, the best epoch, every figure and table written."""

import csv
import math

import numpy as np
import pandas as pd
import pytest
from dvclive import Live

from cifar_resnet.errors import UserError
from cifar_resnet.plotting import (
    best_epoch,
    read_dvclive_history,
    training_figures,
    write_training_plots,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_PNGS = ["accuracy.png", "loss.png", "lr.png", "overview.png",
            "train_acc.png", "train_loss.png", "val_acc.png", "val_loss.png"]


@pytest.fixture(autouse=True)
def outside_any_repo(tmp_path, monkeypatch):
    # dvclive inspects the DVC/git repo of the working directory; keep the tests out of ours.
    monkeypatch.chdir(tmp_path)


def log_run(live_dir, epochs=4, with_val=True):
    """Log a short run exactly as the train stage does, with the real dvclive."""
    with Live(str(live_dir), dvcyaml=False, save_dvc_exp=False) as live:
        for epoch in range(1, epochs + 1):
            live.step = epoch
            live.log_metric("train/loss", 2.0 / epoch)
            live.log_metric("train/acc", 0.2 * epoch)
            if with_val:
                live.log_metric("val/loss", 2.5 / epoch)
                # Validation peaks at epoch 3.
                live.log_metric("val/acc", [0.1, 0.4, 0.6, 0.5][epoch - 1])
            live.log_metric("lr", 0.1 / epoch)
            live.make_summary()


def hand_made_history(with_val=True) -> pd.DataFrame:
    """Epoch 0 is the untrained baseline (no training metrics), as the train stage logs it.

    Validation accuracy peaks at epochs 2 and 4 (a tie: the earlier one is best); training
    accuracy keeps rising, and the baseline's validation accuracy is the highest of all, so
    neither "last epoch", "best training accuracy" nor "include the baseline" gives epoch 2.
    """
    history = pd.DataFrame({
        "step": [0, 1, 2, 3, 4, 5],
        "train_loss": [math.nan, 2.3, 1.7, 1.1, 0.9, 0.7],
        "val_loss": [2.31, 2.0, 1.4, 1.6, 1.5, 1.9],
        "train_acc": [math.nan, 0.3, 0.5, 0.7, 0.8, 0.9],
        "val_acc": [0.95, 0.2, 0.6, 0.5, 0.6, 0.55],
        # Values without a short decimal form, to catch any rounding between CSV and NPZ.
        "lr": [0.1 / 3, 0.1 / 7, 1 / 3e3, 2 ** -20, math.pi * 1e-5, 1e-300],
    })
    return history if with_val else history.drop(columns=["val_loss", "val_acc"])


def read_csv_exactly(path) -> dict[str, list[float]]:
    """The CSV parsed by Python's float() (correctly rounded), independently of pandas."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {column: [float(row[column]) if row[column] else math.nan for row in rows] for column in rows[0]}


def test_history_has_one_row_per_epoch(tmp_path):
    log_run(tmp_path / "dvclive")
    history = read_dvclive_history(tmp_path / "dvclive")
    assert history["step"].tolist() == [1, 2, 3, 4]
    assert set(history.columns) == {"step", "train_loss", "val_loss", "train_acc", "val_acc", "lr"}
    assert history["val_acc"].tolist() == [0.1, 0.4, 0.6, 0.5]
    assert best_epoch(history) == 3


def test_best_epoch_falls_back_to_training_accuracy(tmp_path):
    log_run(tmp_path / "dvclive", with_val=False)
    assert best_epoch(read_dvclive_history(tmp_path / "dvclive")) == 4


def test_best_epoch_on_a_hand_made_history():
    assert best_epoch(hand_made_history()) == 2
    assert best_epoch(hand_made_history(with_val=False)) == 5
    assert best_epoch(pd.DataFrame({"step": [0, 1], "lr": [0.1, 0.1]})) is None


def test_best_epoch_skips_a_spiked_validation_as_the_train_stage_does():
    # Epoch 2's validation loss spiked: logged without val_loss, its val_acc is no best.
    spiked = pd.DataFrame({"step": [0, 1, 2, 3], "train_acc": [math.nan, 0.5, 0.6, 0.7],
                           "val_loss": [2.3, 1.0, math.nan, 0.9], "val_acc": [0.1, 0.5, 0.99, 0.6]})
    assert best_epoch(spiked) == 3
    only_spikes = spiked.assign(val_loss=[2.3, math.nan, math.nan, math.nan])
    assert best_epoch(only_spikes) == 1  # all rank alike below any other: the first, as best.pt


@pytest.mark.parametrize("with_val", [True, False])
def test_every_curve_marks_the_best_epoch(with_val):
    history = hand_made_history(with_val)
    best = best_epoch(history)
    figures = training_figures(history)
    for name, fig in figures.items():
        plotted = [ax for ax in fig.axes if ax.axison]
        assert plotted, name
        for ax in plotted:
            vertical = [line for line in ax.get_lines() if list(line.get_xdata()) == [best, best]]
            assert vertical, f"{name}: no line at the best epoch {best}"
            labels = ax.get_legend_handles_labels()[1]
            assert f"best epoch ({best})" in labels, (name, labels)
    assert f"best epoch {best}" in figures["overview.png"].get_suptitle()


def png_width(path) -> int:
    """A PNG's width in pixels, from its IHDR chunk."""
    return int.from_bytes(path.read_bytes()[16:20], "big")


def test_every_file_is_written_non_empty_and_the_npz_matches_the_csv(tmp_path):
    history = hand_made_history()
    written = write_training_plots(history, tmp_path / "out")
    names = sorted(path.name for path in written)
    assert names == sorted(ALL_PNGS + ["metrics.csv", "metrics.npz"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names  # no temporary files left
    for path in written:
        assert path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_MAGIC
            # Two runs side by side fit a 1400-pixel `dvc plots diff` page.
            assert png_width(path) <= 680, (path.name, png_width(path))

    table = read_csv_exactly(tmp_path / "out" / "metrics.csv")
    with np.load(tmp_path / "out" / "metrics.npz") as npz:
        assert sorted(npz.files) == sorted(table) == sorted(["epoch", "train_loss", "val_loss", "train_acc", "val_acc", "lr"])
        assert npz["epoch"].dtype.kind == "i"
        for column, values in table.items():
            # Bit-for-bit, NaN included: both files hold the same numbers.
            np.testing.assert_array_equal(npz[column], np.array(values), err_msg=column, strict=False)
            np.testing.assert_array_equal(npz[column], history["step" if column == "epoch" else column].to_numpy())


def test_without_a_validation_split_the_val_files_are_skipped(tmp_path):
    log_run(tmp_path / "dvclive", with_val=False)
    written = write_training_plots(read_dvclive_history(tmp_path / "dvclive"), tmp_path / "out")
    expected = [name for name in ALL_PNGS if not name.startswith("val_")] + ["metrics.csv", "metrics.npz"]
    assert sorted(path.name for path in written) == sorted(expected)
    assert all(path.stat().st_size > 0 for path in written)
    with np.load(tmp_path / "out" / "metrics.npz") as npz:
        assert "val_acc" not in npz.files and npz["epoch"].tolist() == [1, 2, 3, 4]


def test_missing_logs_are_a_user_error(tmp_path):
    with pytest.raises(UserError, match="dvc repro train"):
        read_dvclive_history(tmp_path / "nothing")


def test_the_stage_writes_its_folder_and_reports_the_best_epoch(tmp_path, run_stage):
    log_run(tmp_path / "dvclive")
    result = run_stage("plots", "--live", "dvclive", "--out", "plots/training")
    assert result.returncode == 0, result.stderr
    assert "best epoch 3" in result.stdout
    out = tmp_path / "plots" / "training"
    assert sorted(p.name for p in out.iterdir()) == sorted(ALL_PNGS + ["metrics.csv", "metrics.npz"])
    assert sorted(p.name for p in out.parent.iterdir()) == ["training"]  # no temporary folder left
