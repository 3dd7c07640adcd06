import pandas as pd
import pytest
from dvclive import Live

from cifar_resnet.errors import UserError
from cifar_resnet.plotting import best_epoch, read_dvclive_history, write_training_plots


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


def test_every_plot_and_the_csv_are_written(tmp_path):
    log_run(tmp_path / "dvclive")
    written = write_training_plots(read_dvclive_history(tmp_path / "dvclive"), tmp_path / "out")
    names = sorted(path.name for path in written)
    assert names == ["accuracy.png", "loss.png", "lr.png", "metrics.csv", "overview.png"]
    for path in written:
        assert path.stat().st_size > 0
    for png in (p for p in written if p.suffix == ".png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert csv["epoch"].tolist() == [1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names  # no temporary files left


def test_missing_logs_are_a_user_error(tmp_path):
    with pytest.raises(UserError, match="dvc repro train"):
        read_dvclive_history(tmp_path / "nothing")
