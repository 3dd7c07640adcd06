"""dvc.yaml's deps cover what each stage really imports; closures and run keys are computed right."""

from pathlib import Path

import pytest
import yaml

from cifar_resnet.config import RESULT_NEUTRAL_TRAIN_KEYS, TrainParams
from cifar_resnet.provenance import describe_change, digests, import_closure
from conftest import REPO

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(REPO).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_dvc_yaml_deps_cover_the_stage_scripts_import_closure(stage):
    """Editing any project file a stage imports, even lazily, must make DVC rerun that stage."""
    deps = STAGES[stage]["deps"]
    script = REPO / "stages" / f"{stage}.py"
    missing = [p.relative_to(REPO).as_posix() for p in import_closure(script, REPO / "src") if not covered(p, deps)]
    assert not missing, f"dvc.yaml stage {stage!r} lacks deps on {missing}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_dvc_yaml_lists_no_code_the_stage_does_not_import(stage):
    """A code dep the stage never imports only causes needless reruns (and hides drift)."""
    closure = import_closure(REPO / "stages" / f"{stage}.py", REPO / "src")
    code_deps = [d for d in STAGES[stage]["deps"] if d.startswith(("src/", "stages/"))]
    unused = [d for d in code_deps if not any(covered(p, [d]) for p in closure)]
    assert not unused, f"dvc.yaml stage {stage!r} depends on code it does not import: {unused}"


def test_closure_follows_absolute_relative_lazy_and_package_imports(tmp_path):
    src = tmp_path / "src"
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "from .sub import b\n",
        "pkg/sub/__init__.py": "from . import c\n",
        "pkg/sub/b.py": "def f():\n    from ..d import g\n",
        "pkg/sub/c.py": "import json\n",
        "pkg/d.py": "from pkg.sub.c import x\n",
        "pkg/unused.py": "",
    }
    for name, text in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "helper.py").write_text("")
    script = tmp_path / "stages" / "run.py"
    script.write_text("import helper\nimport os\n\ndef main():\n    from pkg import a\n")
    found = {p.relative_to(tmp_path).as_posix() for p in import_closure(script, src)}
    assert found == {"stages/run.py", "stages/helper.py", *(f"src/{n}" for n in files if n != "pkg/unused.py")}


def test_describe_change_names_what_differs(tmp_path):
    key = {"params": "p1", "code": {"src/a.py": "1", "src/b.py": "2"}, "data": {"train.npz": "9"}}
    assert describe_change(key, key) is None
    edited = {**key, "code": {"src/a.py": "1", "src/b.py": "3"}}
    assert describe_change(key, edited) == "other code (src/b.py)"
    assert describe_change(key, {**edited, "params": "p2", "data": {}}) == (
        "other parameters; other code (src/b.py); other data (train.npz)")
    assert describe_change({}, key) == "other parameters; other code (src/a.py, src/b.py); other data (train.npz)"


def test_digests_are_of_the_bytes(tmp_path):
    (tmp_path / "a").write_bytes(b"x")
    (tmp_path / "b").write_bytes(b"x")
    found = digests([tmp_path / "a", tmp_path / "b"], tmp_path)
    assert found["a"] == found["b"] == "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"


def test_the_train_stage_depends_on_every_train_param_but_the_result_neutral_ones():
    """A new TrainParams field becomes a dep of the train stage, unless it is declared result-neutral.

    A forgotten one would let `dvc exp run -S train.new_knob=...` report the old model as
    its result; a neutral one listed would retrain for nothing (train.num_workers).
    """
    listed = [p for p in STAGES["train"]["params"] if p == "train" or p.startswith("train.")]
    assert "train" not in listed  # the whole section would make the neutral keys deps again
    assert len(listed) == len(set(listed))
    expected = {f"train.{name}" for name in set(TrainParams.model_fields) - set(RESULT_NEUTRAL_TRAIN_KEYS)}
    assert set(listed) == expected
    assert set(RESULT_NEUTRAL_TRAIN_KEYS) <= set(TrainParams.model_fields)  # a renamed key is no silent exclusion
