"""`dvc artifacts get` for this project's model, offline, with the real dvc and gto CLIs.

dvc.yaml's `artifacts:` entry alone is not enough: `dvc artifacts get` (without DVC Studio)
looks the artifact's version up in GTO's Git tags (`cifar-resnet@v1.0.0`, annotated, as
`gto register` writes them) and fails with "Unable to find artifact" until one exists. From a
local repository path it then reads the model from that repository's own DVC cache: no
remote, no Studio, no network. The repository here holds this project's `artifacts:` entry
verbatim and a stand-in model tracked by DVC (the real pipeline's run is in docs/models.md, "Model
registry").
"""

import shutil
import subprocess

import pytest
import yaml

from conftest import REPO, dvc, dvc_env

GTO = shutil.which("gto")


def git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   cwd=root, check=True, capture_output=True)


@pytest.fixture()
def registry_repo(tmp_path):
    artifacts = yaml.safe_load((REPO / "dvc.yaml").read_text())["artifacts"]
    (name, entry), = artifacts.items()
    root = tmp_path / "project"
    (root / entry["path"]).parent.mkdir(parents=True)
    git(root, "init", "-q")
    dvc(root, "init", "-q", timeout=120)
    (root / entry["path"]).write_bytes(b"stand-in weights\x00\x01")
    dvc(root, "add", "-q", entry["path"], timeout=120)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"artifacts": artifacts}, sort_keys=False))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "model")
    return root, name, entry["path"]


@pytest.mark.slow  # the dvc and gto CLIs in subprocesses, about 6 s
@pytest.mark.skipif(GTO is None, reason="the gto CLI (installed with dvc) is not on PATH")
def test_artifacts_get_from_a_local_repo_needs_a_registered_version(registry_repo, tmp_path):
    root, name, path = registry_repo
    before = dvc(tmp_path, "artifacts", "get", str(root), name, "-o", "before.pt", check=False, timeout=120)
    assert before.returncode != 0
    assert f"Unable to find artifact '{name}'" in before.stdout + before.stderr

    env = dict(dvc_env(root), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    subprocess.run([GTO, "register", name], cwd=root, env=env, check=True, capture_output=True)
    subprocess.run([GTO, "assign", name, "--stage", "prod"], cwd=root, env=env, check=True, capture_output=True)

    for args, out in [([], "latest.pt"), (["--rev", "v0.0.1"], "version.pt"), (["--stage", "prod"], "prod.pt")]:
        dvc(tmp_path, "artifacts", "get", str(root), name, *args, "-o", out, timeout=120)
        assert (tmp_path / out).read_bytes() == (root / path).read_bytes()
    # The plain path-based alternative, which needs no registration at all.
    dvc(tmp_path, "get", str(root), path, "-o", "by_path.pt", timeout=120)
    assert (tmp_path / "by_path.pt").read_bytes() == (root / path).read_bytes()
