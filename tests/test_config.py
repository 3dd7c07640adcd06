import pytest
import yaml

from cifar_resnet.config import load_params, validate_params
from cifar_resnet.errors import UserError

REPO_PARAMS = "params.yaml"


def test_repository_params_are_the_real_recipe():
    params = load_params(REPO_PARAMS)
    assert params.data.dataset == "cifar10"
    assert (params.model.arch, params.model.stem, params.model.width) == ("resnet34", "cifar", 64)
    train = params.train
    assert (train.optimizer, train.momentum, train.nesterov) == ("sgd", 0.9, True)
    assert (train.max_lr, train.weight_decay, train.batch_size, train.epochs) == (0.1, 5e-4, 128, 30)


def test_repository_params_spell_out_every_key():
    """params.yaml is the user's interface: every schema key appears there, none is implicit."""
    raw = yaml.safe_load(open(REPO_PARAMS))
    defaults = validate_params({}).model_dump()

    def keys(tree, prefix=""):
        for key, value in tree.items():
            yield prefix + key
            if isinstance(value, dict):
                yield from keys(value, prefix + key + ".")

    assert set(keys(raw)) == set(keys(defaults))


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"train": {"max_lrr": 0.1}}, "unknown key train.max_lrr"),
        ({"colour": 1}, "unknown key colour"),
        ({"train": {"epochs": "many"}}, "train.epochs = 'many'"),
        ({"train": {"max_lr": -0.1}}, "train.max_lr = -0.1: Input should be greater than 0"),
        ({"data": {"val_fraction": 1.5}}, "data.val_fraction = 1.5"),
        ({"data": {"dataset": "imagenet"}}, "'cifar10', 'cifar100', 'shapes', 'digits' or 'folder'"),
        ({"model": {"stem": "big"}}, "model.stem = 'big'"),
        ({"train": {"device": "tpu"}}, "train.device = 'tpu'"),
        ({"train": {"momentum": 0.0}}, "train: nesterov needs momentum > 0"),
        ({"data": {"synthetic": {"train_size": 3}}}, "data.synthetic.train_size = 3"),
    ],
)
def test_bad_params_name_the_key_the_value_and_what_is_allowed(raw, expected):
    with pytest.raises(UserError) as caught:
        validate_params(raw)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_several_problems_are_counted_in_one_line():
    with pytest.raises(UserError, match=r"and 1 more problem\)$"):
        validate_params({"train": {"epochs": 0, "batch_size": 0}})


def test_yaml_scientific_notation_without_sign_is_accepted():
    # PyYAML reads 5e-4 as a string (YAML 1.1); DVC's -S writes such values. Both must work.
    assert validate_params({"train": {"weight_decay": "5e-4"}}).train.weight_decay == 5e-4


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_params(tmp_path / "params.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_params(listed)
