"""The final-model file format: state_dict + JSON config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cifar_resnet.errors import UserError
from cifar_resnet.models import build_model, load_model, save_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread: see conftest

CONFIG = {
    "arch": "resnet18",
    "num_classes": 3,
    "width": 8,
    "stem": "cifar",
    "dropout": 0.1,
    "blocks": [1, 1, 1, 1],
    "classes": ["cat", "dog", "frog"],
    "mean": [0.49, 0.48, 0.45],
    "std": [0.25, 0.24, 0.26],
}


def _saved(tmp_path: Path) -> tuple[torch.nn.Module, Path, Path]:
    torch.manual_seed(0)
    kwargs = {k: CONFIG[k] for k in ("width", "stem", "dropout", "blocks")}
    model = build_model(CONFIG["arch"], CONFIG["num_classes"], **kwargs)
    # Move BN running stats off their defaults so buffers are part of the round trip.
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32))
    weights, config = tmp_path / "model" / "model.pt", tmp_path / "model" / "model.json"
    save_model(weights, config, model, CONFIG)
    return model.eval(), weights, config


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model, weights, config_path = _saved(tmp_path)
    loaded, config = load_model(weights, config_path, device="cpu")
    assert config == CONFIG
    assert not loaded.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert sorted(p.name for p in weights.parent.iterdir()) == ["model.json", "model.pt"]  # no temp leftovers


def test_missing_files_name_the_producing_stage(tmp_path: Path) -> None:
    _, weights, config = _saved(tmp_path)
    with pytest.raises(UserError, match="train"):
        load_model(tmp_path / "absent.pt", config)
    with pytest.raises(UserError, match="train"):
        load_model(weights, tmp_path / "absent.json")


def test_corrupt_files_are_user_errors(tmp_path: Path) -> None:
    _, weights, config = _saved(tmp_path)
    bad_weights = tmp_path / "bad.pt"
    bad_weights.write_bytes(b"not a torch file")
    bad_config = tmp_path / "bad.json"
    bad_config.write_text("{ nope")
    for args, bad, what in [((bad_weights, config), bad_weights, "not loadable model weights"),
                            ((weights, bad_config), bad_config, "not a valid model config")]:
        with pytest.raises(UserError) as info:
            load_model(*args)
        message = str(info.value)
        assert message.startswith(f"{bad}: {what}") and "\n" not in message, message


def test_weights_for_another_config_are_user_errors(tmp_path: Path) -> None:
    _, weights, config = _saved(tmp_path)
    other = tmp_path / "other.json"
    save_model(tmp_path / "unused.pt", other, build_model("resnet18", 3, width=16), {**CONFIG, "width": 16})
    with pytest.raises(UserError, match="does not match"):
        load_model(weights, other)


def test_weights_lacking_or_mangling_a_tensor_name_it(tmp_path: Path) -> None:
    _, weights, config = _saved(tmp_path)
    state = torch.load(weights, weights_only=True)
    counter = next(key for key in state if key.endswith("num_batches_tracked"))
    torch.save({key: value for key, value in state.items() if key != counter}, tmp_path / "lacking.pt")
    torch.save({**state, "fc.bias": [0.0]}, tmp_path / "mangled.pt")
    # The final model loads strictly: unlike pretrained weights, it may not lack BatchNorm's counters.
    with pytest.raises(UserError, match=rf"\(1 tensors of this model are missing there, e.g. '{counter}'\)$"):
        load_model(tmp_path / "lacking.pt", config)
    with pytest.raises(UserError, match=r"\('fc.bias' has shape None there, \(3,\) here\)$"):
        load_model(tmp_path / "mangled.pt", config)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"width": 1e5}, "width = 100000.0: Input should be less than or equal to 1024"),
        ({"mean": "0.5"}, "mean = '0.5': Input should be a valid list"),
        ({"std": [0.2, 0.0, 0.2]}, "std.1 = 0.0: Input should be greater than 0"),
        ({"mean": None}, "model config lacks mean; retrain"),
        ({"classes": ["cat"]}, "classes lists 1 names but num_classes is 3"),
        ({"num_classes": "many"}, "num_classes = 'many'"),
        ({"arch": "vgg"}, "arch = 'vgg'"),
    ],
)
def test_a_corrupt_config_is_a_one_line_user_error(change, expected, tmp_path: Path) -> None:
    import json

    _, weights, config = _saved(tmp_path)
    corrupt = {key: value for key, value in {**CONFIG, **change}.items() if value is not None}
    config.write_text(json.dumps(corrupt))
    with pytest.raises(UserError, match="model.json: ") as caught:
        load_model(weights, config)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow  # another subprocess run of a script the quick loop already runs
@pytest.mark.parametrize("stage", ["evaluate", "export", "gradcam"])
def test_stages_report_a_corrupt_config_in_one_line(stage, tmp_path: Path, run_stage) -> None:
    import json
    import shutil

    from conftest import REPO

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    _, weights, config = _saved(tmp_path)
    config.write_text(json.dumps({**CONFIG, "width": 100000}))
    outputs = {"evaluate": ["--metrics", "e.json", "--plots", "pl"], "export": ["--out", "ex", "--latency", "lat", "--metrics", "x.json",
                                                                                 "--calibration", "e.json"],
               "gradcam": ["--out", "gc", "--metrics", "g.json"]}[stage]
    result = run_stage(stage, "--data", "prepared", "--model", str(weights), "--config", str(config), *outputs)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {config}: not a valid model config (width = 100000: Input "
                                                  "should be less than or equal to 1024); retrain with `dvc repro train`"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "params.yaml"]


def test_a_deeply_nested_config_is_a_one_line_user_error(tmp_path: Path) -> None:
    _, weights, config = _saved(tmp_path)
    config.write_text("[" * 100_000 + "]" * 100_000)  # RecursionError inside json, not a JSONDecodeError
    with pytest.raises(UserError, match=r"model\.json: not a valid model config \(nested too deeply\)$"):
        load_model(weights, config)
