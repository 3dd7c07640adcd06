"""The train stage publishes nothing when params.yaml, its code or its data changed while it trained.

A second `dvc exp run` in the same workspace rewrites params.yaml mid-run, and DVC would
record the first run's model under the second run's params (dvc.lock and the run-cache).
"""

import pytest
import yaml

from cifar_resnet.config import load_params
from cifar_resnet.errors import UserError
from cifar_resnet.training import session
from cifar_resnet.training.session import RunSources, TrainOutputs, train_resumably
from conftest import toy_images

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.timeout(600)]  # see conftest

OUTPUTS = ("model.pt", "model.json", "baseline.pt", "summary.json", "checkpoints", "live", "resume")
PARAMS = {
    "seed": 0,
    "model": {"arch": "resnet18", "width": 4, "blocks": [1, 1, 1, 1]},
    "train": {"epochs": 1, "batch_size": 16, "max_lr": 0.05, "scheduler": "none", "num_workers": 0,
              "device": "cpu", "precision": "fp32", "channels_last": False},
}


def train_while(tmp_path, monkeypatch, change):
    """The train stage's library call, with `change(tmp_path)` done while it trains; returns its outputs."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (tmp_path / "code.py").write_text("VALUE = 1\n")
    (tmp_path / "data.npz").write_bytes(b"prepared")
    real_fit = session.fit

    def fit_then_change(*args, **kwargs):
        outcome = real_fit(*args, **kwargs)
        change(tmp_path)  # after the last epoch, before the outputs are written: the widest window
        return outcome

    monkeypatch.setattr(session, "fit", fit_then_change)
    outputs = TrainOutputs(*(tmp_path / "out" / name for name in OUTPUTS))
    sources = RunSources([tmp_path / "code.py"], [tmp_path / "data.npz"], tmp_path, tmp_path / "params.yaml")
    train_resumably(load_params(tmp_path / "params.yaml"), ["dark", "bright"], toy_images(64, 0), toy_images(32, 1),
                    outputs, sources)
    return outputs


def set_max_lr(folder):
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["train"]["max_lr"] = 0.02  # as `dvc exp run -S train.max_lr=0.02` does
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


def edit_code(folder):
    (folder / "code.py").write_text("VALUE = 2\n")


@pytest.mark.parametrize("change, message", [
    (set_max_lr, "params.yaml changed while training (train.max_lr): outputs not written"),
    (edit_code, "the train stage's code or data changed while training (other code (code.py)): outputs not written"),
], ids=["params", "code"])
def test_a_run_whose_inputs_changed_while_it_trained_writes_no_outputs(change, message, tmp_path, monkeypatch):
    with pytest.raises(UserError) as refused:
        train_while(tmp_path, monkeypatch, change)
    line = str(refused.value)
    assert "\n" not in line and line.endswith("`dvc exp run --queue`, then `dvc queue start`")
    assert message in line
    out = tmp_path / "out"
    assert not (out / "model.pt").exists() and not (out / "model.json").exists() and not (out / "checkpoints").exists()
    assert (out / "resume" / "last.pt").exists()  # kept: the finished run is not lost


def test_an_unchanged_run_writes_its_outputs(tmp_path, monkeypatch):
    outputs = train_while(tmp_path, monkeypatch, lambda folder: (folder / "params.yaml").touch())
    assert outputs.model.exists() and outputs.config.exists() and (outputs.checkpoints / "last.pt").exists()


def test_a_result_neutral_key_changed_while_it_trained_still_publishes(tmp_path, monkeypatch):
    """train.num_workers is no dvc.yaml dep (config.RESULT_NEUTRAL_TRAIN_KEYS): DVC records the run alike."""

    def set_num_workers(folder):
        params = yaml.safe_load((folder / "params.yaml").read_text())
        params["train"]["num_workers"] = 3
        (folder / "params.yaml").write_text(yaml.safe_dump(params))

    outputs = train_while(tmp_path, monkeypatch, set_num_workers)
    assert outputs.model.exists() and (outputs.checkpoints / "last.pt").exists()
