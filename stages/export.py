"""Stage `export`: the model as checked, timed deployment files (what it writes: cifar_resnet.pipeline.export)."""

import argparse
import os
import sys
from pathlib import Path

import _local_src  # noqa: F401  (first: this tree's src/, whatever is installed)

from cifar_resnet.config import load_params
from cifar_resnet.errors import run_stage
from cifar_resnet.pipeline import export


def main() -> None:
    parser = argparse.ArgumentParser(description=export.__doc__)
    parser.add_argument("--data", type=Path, required=True, help="output folder of the split stage")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for the exported models")
    parser.add_argument("--latency", type=Path, required=True, help="folder for the latency and parity tables")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--calibration", type=Path, required=True,
                        help="the evaluate stage's metrics JSON: its fitted temperature goes into preprocess.json")
    args = parser.parse_args()
    cfg = load_params().export
    if os.environ.get("PYTHONHASHSEED") != "0":  # dvc.yaml's command sets it; a run by hand may not
        print("note: PYTHONHASHSEED is not 0, so scripted.pt's bytes (not its behaviour) differ from a `dvc repro` "
              "run's; run it as PYTHONHASHSEED=0 python stages/export.py ...", file=sys.stderr)
    export.run(cfg, export.ExportPaths(args.data, args.model, args.config, args.out, args.latency, args.metrics,
                                         args.calibration))


if __name__ == "__main__":
    run_stage(main)
