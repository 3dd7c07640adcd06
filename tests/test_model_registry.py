"""`dvc artifacts get` for this project's model, offline, with the real dvc and gto CLIs.

dvc.yaml's `artifacts:` entry alone is not enough: `dvc artifacts get` (without DVC Studio)
looks the artifact's version up in GTO's Git tags (`cifar-resnet@v1.0.0`, annotated, as
`gto register` writes them) and fails with "Unable to find artifact" until one exists. From a
local repository path it then reads the model from that repository's own DVC cache: no
remote, no Studio, no network. The repository here holds this project's `artifacts:` entry
verbatim, params.yaml (its labels are templated from it) and a stand-in export folder tracked
by DVC; the last test fetches the smoke pipeline's real export and classifies an image with it
in a process that imports only torch and PIL: docs/models.md's loader, run as the doc shows it.
"""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO, dvc, dvc_env

GTO = shutil.which("gto")


def git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   cwd=root, check=True, capture_output=True)


def gto(root, *args):
    env = dict(dvc_env(root), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    subprocess.run([GTO, *args], cwd=root, env=env, check=True, capture_output=True, timeout=120)


def folder_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def registry_repo(tmp_path):
    artifacts = yaml.safe_load((REPO / "dvc.yaml").read_text())["artifacts"]
    (name, entry), = artifacts.items()
    root = tmp_path / "project"
    model = root / entry["path"]
    model.mkdir(parents=True)
    git(root, "init", "-q")
    dvc(root, "init", "-q", timeout=120)
    (model / "scripted.pt").write_bytes(b"stand-in weights\x00\x01")
    (model / "preprocess.json").write_text('{"classes": ["a", "b"]}\n')
    dvc(root, "add", "-q", entry["path"], timeout=120)
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (root / "dvc.yaml").write_text(yaml.safe_dump({"artifacts": artifacts}, sort_keys=False))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "model")
    return root, name, entry["path"]


def test_the_artifact_labels_are_the_params_architecture_and_dataset(registry_repo):
    """dvc.yaml's labels are templates (${model.arch}): DVC fills them from params.yaml."""
    from dvc.repo import Repo

    root, name, _ = registry_repo
    params = yaml.safe_load((root / "params.yaml").read_text())
    artifact = Repo(str(root)).artifacts.read()["dvc.yaml"][name]
    assert artifact.labels == [params["model"]["arch"], params["data"]["dataset"]]
    assert "${" not in artifact.desc and artifact.desc.startswith(f"{params['model']['arch']} classifier")


@pytest.mark.slow  # the dvc and gto CLIs in subprocesses, about 6 s
@pytest.mark.skipif(GTO is None, reason="the gto CLI (installed with dvc) is not on PATH")
def test_artifacts_get_from_a_local_repo_needs_a_registered_version(registry_repo, tmp_path):
    root, name, path = registry_repo
    before = dvc(tmp_path, "artifacts", "get", str(root), name, "-o", "before", check=False, timeout=120)
    assert before.returncode != 0
    assert f"Unable to find artifact '{name}'" in before.stdout + before.stderr

    gto(root, "register", name)
    gto(root, "assign", name, "--stage", "prod")
    for args, out in [([], "latest"), (["--rev", "v0.0.1"], "version"), (["--stage", "prod"], "prod")]:
        dvc(tmp_path, "artifacts", "get", str(root), name, *args, "-o", out, timeout=120)
        assert folder_bytes(tmp_path / out) == folder_bytes(root / path)
    # The plain path-based alternative, which needs no registration at all.
    dvc(tmp_path, "get", str(root), path, "-o", "by_path", timeout=120)
    assert folder_bytes(tmp_path / "by_path") == folder_bytes(root / path)


def standalone_loader() -> str:
    """The Python block of docs/models.md's "Use the model without this package"."""
    text = (REPO / "docs" / "models.md").read_text()
    section = text[text.index("## Use the model without this package"):]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


def predict_line(folder, image, classes, cwd) -> dict[str, float]:
    """scripts/predict.py's probabilities (printed to 0.1%) for every class, by name."""
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "predict.py"), "--model", str(folder / "scripted.pt"),
                             "--top", str(len(classes)), str(image)],
                            capture_output=True, text=True, cwd=cwd, timeout=120, env=dict(dvc_env(cwd), PYTHONPATH=str(REPO / "src")))
    assert result.returncode == 0, result.stderr
    ranked = result.stdout.strip().split(": ", 1)[1].split(", ")
    return {item.rsplit(" ", 1)[0]: float(item.rsplit(" ", 1)[1].rstrip("%")) / 100 for item in ranked}


@pytest.mark.slow  # the smoke pipeline (shared by the session), then gto, dvc and three Python processes
@pytest.mark.timeout(2400)
@pytest.mark.skipif(GTO is None, reason="the gto CLI (installed with dvc) is not on PATH")
def test_a_fetched_model_classifies_with_torch_alone_as_predict_does(smoke_copy, tmp_path):
    name = next(iter(yaml.safe_load((smoke_copy / "dvc.yaml").read_text())["artifacts"]))
    gto(smoke_copy, "register", name)
    dvc(tmp_path, "artifacts", "get", str(smoke_copy), name, "-o", "model", timeout=300)
    folder = tmp_path / "model"
    info = json.loads((folder / "preprocess.json").read_text())
    # The export stage copied the temperature the evaluate stage fitted (the smoke profile has a validation split).
    fitted = json.loads((smoke_copy / "metrics" / "eval.json").read_text())["calibrated"]["temperature"]
    assert info["temperature"] == fitted and fitted != 1.0
    assert info["resize"] == {"filter": "bicubic", "reducing_gap": 2.0, "jpeg_draft": True}

    image = tmp_path / "photo.jpg"  # not 32x32: the resize is part of what must agree
    rng = np.random.default_rng(0)
    Image.fromarray(np.kron(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8), np.ones((9, 9, 1), np.uint8))).save(image)
    code = standalone_loader() + "\nassert not [m for m in sys.modules if m.split('.')[0] == 'cifar_resnet']\n"
    # -I: no PYTHONPATH, no user site, the script's folder not on sys.path; torch and PIL as installed.
    result = subprocess.run([sys.executable, "-I", "-c", code, str(folder), str(image)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    standalone = json.loads(result.stdout)["probabilities"]
    assert list(standalone) == info["classes"] and sum(standalone.values()) == pytest.approx(1.0, abs=1e-9)

    printed = predict_line(folder, image, info["classes"], tmp_path)
    assert set(printed) == set(info["classes"])
    assert max(printed, key=printed.get) == max(standalone, key=standalone.get)
    for cls, probability in printed.items():
        assert standalone[cls] == pytest.approx(probability, abs=0.0006)  # predict.py prints to 0.1%
