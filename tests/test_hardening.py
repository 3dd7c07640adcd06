"""Bad input and untrusted files: clean, specific errors, and nothing lost."""

import pickle
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cifar_resnet.config import set_dotted, validate_params
from cifar_resnet.errors import UserError
from cifar_resnet.training import load_checkpoint

# Every leaf of the schema with its default, as dotted keys.
DEFAULTS = validate_params({}).model_dump()


def leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


LEAVES = dict(leaves(DEFAULTS))


def nest(dotted: str, value) -> dict:
    tree = {}
    set_dotted(tree, dotted, value)
    return tree


# Values that no key of the schema accepts. The list holds no integers: a list of small
# integers is a valid export.latency_batches.
HOSTILE = st.sampled_from([["x", None], {"nested": 1}, -10**9, float("nan"), -0.5])


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(sorted(LEAVES)), value=HOSTILE)
def test_bad_values_give_one_line_naming_the_key(key, value):
    with pytest.raises(UserError) as caught:
        validate_params(nest(key, value))
    message = str(caught.value)
    assert "\n" not in message
    # A bad item of a list value is named by its index: export.latency_batches.0 = 'x'
    assert re.match(rf"params\.yaml: {re.escape(key)}(\.\d+)? = ", message), message


@settings(max_examples=60, deadline=None)
@given(section=st.sampled_from(sorted(k for k, v in DEFAULTS.items() if isinstance(v, dict))),
       name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
def test_unknown_keys_are_named(section, name):
    if name in DEFAULTS[section]:
        return
    with pytest.raises(UserError, match=f"unknown key {section}.{name}"):
        validate_params({section: {name: 1}})


@pytest.mark.parametrize("raw, expected", [
    ({"train": {"target_val_acc": 1.5}}, "train.target_val_acc = 1.5"),
    ({"data": {"val_fraction": 1.0}}, "data.val_fraction = 1.0"),
    ({"train": {"scheduler": "cosine", "epochs": 3, "warmup_epochs": 3}}, "leaves no epochs to anneal"),
    ({"train": {"augment": {"erasing": {"hole_min": 20, "hole_max": 10}}}}, "hole_min 20 is larger than hole_max 10"),
    ({"model": {"stem": "imagenet"}, "gradcam": {"target_layer": "layer4"}}, "gradcam.target_layer layer4 is 1x1"),
])
def test_contradictory_settings_are_rejected(raw, expected):
    with pytest.raises(UserError, match=expected.replace("(", r"\(").replace(".", r"\.")):
        validate_params(raw)


class Exploit:
    """A pickle that would run a command when loaded without weights_only."""

    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('owned')",))


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"model": Exploit()}, handle)
    torch.save({"model": {}, "payload": Exploit()}, tmp_path / "evil-zip.pt")
    for candidate in (path, tmp_path / "evil-zip.pt"):
        with pytest.raises(UserError, match="not a loadable checkpoint"):
            load_checkpoint(candidate)
    assert not (tmp_path / "PWNED").exists()


def test_divergence_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    from conftest import run_fit, train_cfg

    cfg = train_cfg(epochs=4, scheduler="none", max_lr=0.1)
    run_fit(tmp_path, train_cfg(epochs=2, scheduler="none", max_lr=0.1))
    good = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert good["epoch"] == 2
    # Resume with an absurd learning rate: the loss blows up during epoch 3.
    exploding = dict(good)
    exploding["optimizer"]["param_groups"][0]["lr"] = 1e30
    with pytest.raises(UserError, match=r"training diverged at epoch 3: the training loss is (not finite|nan|inf)"):
        run_fit(tmp_path, cfg, resume=exploding)
    kept = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert kept["epoch"] == 2
    assert all(torch.isfinite(t).all() for t in kept["model"].values() if t.is_floating_point())
