"""Stage `train`: build the ResNet from `model.*`, train it with `train.*`, log with dvclive.

Outputs: the final model (best or last epoch's weights, train.final_model, + JSON config), the baseline model (the
weights before the first update: random or pretrained, for the evaluate stage), the model
summary metrics, the finished run's checkpoints, the dvclive folder. An interrupted run's
checkpoints wait in the --resume folder (not a DVC output), keyed by params, code and data.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..config import Params
from ..data import load_classes, load_imageset


@dataclass(frozen=True)
class TrainPaths:
    data: Path  # output folder of the split stage
    model: Path  # final weights (.pt)
    config: Path  # final model's architecture config (.json)
    baseline: Path  # weights before training (.pt), same config
    summary: Path  # model summary metrics (.json)
    checkpoints: Path  # finished run's best.pt, last.pt, epoch_NNN.pt
    resume: Path  # folder for an unfinished run's checkpoints
    live: Path  # dvclive folder


def run(params: Params, paths: TrainPaths, script: Path, src: Path, params_file: Path) -> None:
    """Train as the stage `script` (this tree's `src`) would: relaunched under torchrun for train.nproc > 1.

    `script` is what torchrun starts once per device, and with `src` it names the code the
    resume key holds. `params_file` is the file `params` came from: it is read again before
    the outputs are written, so a run it no longer describes is not published.
    """
    classes = load_classes(paths.data / "classes.json")
    data_files = [paths.data / name for name in ("train.npz", "val.npz", "classes.json")]
    train_set = load_imageset(data_files[0], num_classes=len(classes))
    val_set = load_imageset(data_files[1], num_classes=len(classes))
    from ..distributed import launched_by_torchrun, run_under_torchrun
    from ..training.run import check_consistency

    check_consistency(params.train, len(train_set), len(val_set))
    if params.train.nproc > 1 and not launched_by_torchrun():
        print(f"launching {params.train.nproc} processes with torchrun", flush=True)  # the script, once per device
        sys.exit(run_under_torchrun(params.train.nproc, sys.argv))

    from ..provenance import import_closure
    from ..training.session import RunSources, TrainOutputs, train_resumably

    outputs = TrainOutputs(paths.model, paths.config, paths.baseline, paths.summary, paths.checkpoints, paths.live,
                           paths.resume)
    # The resume key holds the script's import closure: a checkpoint of other code is never resumed.
    sources = RunSources(import_closure(script, src), data_files, src.parent, params_file)
    train_resumably(params, classes, train_set, val_set, outputs, sources)
