"""One command to verify and measure a GPU: environment, training throughput, inference
latency, data-parallel training, and the CPU recipe against airbench94 on CIFAR-10.

    python benchmarks/gpu_report.py --out reports/h100                       # about 6-9 minutes on one H100
    python benchmarks/gpu_report.py --out reports/h100 --cifar ~/cifar10-jpeg  # + the recipe against airbench94
    python benchmarks/gpu_report.py --out /tmp/r --quick --device cpu          # tiny version of everything, CPU

Writes DIR/report.json and DIR/report.md. Needs no network. Every section runs the
project's own code (the train stage's run from training.run.build_run, set up by
training.loop.prepare, train_one_epoch and fit; export.py's exports and latency
functions; report.md is written by gpu_report_markdown.py); a section that
fails records its error and the others still run. Sections that would overrun the time
budget (--budget, seconds for the whole report) are recorded as skipped, so the report
always gets written.

Throughput is images per second of the real training step (augmentation, CutMix,
optimiser step) after warm-up, timed between CUDA synchronisations. `data_wait_share`
is the share of that time the host spent in the feeder's next(): the step never waits
for the GPU within an epoch, so on a GPU whose step is bound by the host (small CIFAR
models) that is time the GPU sits idle too. On-device feeding only enqueues its
augmentation kernels, 8,192 images at a time, so its share is the host's launch work;
its rows time whole chunks (64 steps at batch 128, 48 at 512), so each window pays its
share of that work.

--cifar takes CIFAR-10 as JPEGs in ImageFolder layout (train/<class>/*.jpg and
test/<class>/*.jpg), as a folder or a .tar/.tar.gz of one, read by the project's folder
reader. On it the last section runs benchmarks/airbench_parity.py's stick on this card:
the airbench94 reference and the CPU recipe (recipes/cpu.yaml through the train stage's
fit), seeds 0 and 1 each, trained on train/ and scored on test/, with their training
times and the ratio (parity is the target); --quick shrinks both to width 4, batch 16,
2 epochs.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "benchmarks")]
import airbench_parity  # noqa: E402 - sibling scripts, not a package
from gpu_report_markdown import markdown  # noqa: E402

from cifar_resnet.config import ModelParams, Params, TrainParams, validate_params  # noqa: E402
from cifar_resnet.data.arrays import ImageSet  # noqa: E402
from cifar_resnet.distributed import DistInfo, shutdown, torchrun_command  # noqa: E402
from cifar_resnet.evaluation import flip_tta_logits  # noqa: E402
from cifar_resnet.inference import evaluate_logits  # noqa: E402
from cifar_resnet.models import count_parameters, prepare_model  # noqa: E402
from cifar_resnet.training import Precision, channel_stats, fit, seed_everything, train_one_epoch  # noqa: E402
from cifar_resnet.training.feeding import chunk_batches  # noqa: E402
from cifar_resnet.training.loop import prepare  # noqa: E402
from cifar_resnet.training.run import build_feeder, build_run, join_devices  # noqa: E402

# Seed 001's per-image augmentation and CutMix: the heaviest recipe, so feeding is tested hardest.
SEED001_AUGMENT = {"crop_padding": 4, "border_mode": "constant", "hflip": True, "affine": {"p": 0.5},
                   "erasing": {"p": 0.3}, "cutmix": {"p": 0.3}}


@dataclass(frozen=True)
class Mode:
    """Sizes of every section: the full GPU report or the tiny --quick one."""

    width: int
    batches: tuple[int, int]
    warmup_steps: int
    timed_steps: int
    latency_batches: tuple[int, ...]
    latency_repeats: int
    ddp_images: int
    quick_parity: bool  # the recipe-against-airbench94 section at tiny sizes

    @staticmethod
    def pick(quick: bool) -> "Mode":
        if quick:
            return Mode(4, (16, 32), 1, 2, (1, 8), 3, 256, True)
        return Mode(64, (128, 512), 10, 40, (1, 256), 30, 25_600, False)


class Clock:
    """Seconds left of the report's budget, so late sections skip instead of overrunning."""

    def __init__(self, budget: float) -> None:
        self.start, self.budget = time.perf_counter(), budget

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_params(arch: str, width: int):
    """The validated model section of `arch` at `width`, every other model setting at its default."""
    return validate_params({"model": {"arch": arch, "width": width}}).model


def guarded(section: Callable[[], Any]) -> Any:
    """Run one section; an exception becomes {"error": ...} in the report instead of ending it."""
    try:
        return section()
    except Exception as err:  # noqa: BLE001 - a report records every failure and goes on
        traceback.print_exc()
        return {"error": f"{type(err).__name__}: {err}".splitlines()[0]}


# ---------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------


def gpu_info() -> list[dict[str, Any]]:
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append({"index": index, "name": props.name, "capability": f"{props.major}.{props.minor}",
                     "memory_gib": round(props.total_memory / 2**30, 1), "multiprocessors": props.multi_processor_count})
    return gpus


def driver_version() -> Optional[str]:
    """The NVIDIA driver, from nvidia-smi when it is installed (torch does not report it)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def environment(device: torch.device) -> dict[str, Any]:
    from cifar_resnet.latency import environment_info

    cuda = torch.cuda.is_available()
    return {
        "device": str(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "gpus": gpu_info() if cuda else [],
        "driver": driver_version() if cuda else None,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "host": {key: value for key, value in environment_info().items() if key != "device"},
    }


# ---------------------------------------------------------------------------------------
# Training throughput
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    arch: str
    precision: str  # fp32 | bf16 (autocast)
    channels_last: bool
    compile: bool | str  # False, True (the default mode) or a torch.compile mode
    feeding: str  # device | loader
    batch: int


def throughput_grid(mode: Mode, compiled: bool) -> list[Setting]:
    """A subset of arch x precision x channels_last x compile x feeding x batch that fits the budget.

    Each comparison changes one thing: fp32 -> bf16 -> channels_last, batch 128 -> 512,
    on-device -> DataLoader feeding at both corners, and torch.compile at the fastest corner,
    plus CUDA graphs (compile mode reduce-overhead) where the host bounds the step most:
    ResNet18 at the small batch.
    """
    small, large = mode.batches
    if compiled:
        return [Setting(arch, "bf16", True, True, "device", large) for arch in ("resnet18", "resnet34")] + [
            Setting("resnet18", "bf16", True, "reduce-overhead", "device", small)]
    grid = []
    for arch in ("resnet18", "resnet34"):
        grid += [
            Setting(arch, "fp32", False, False, "device", small),
            Setting(arch, "fp32", False, False, "loader", small),
            Setting(arch, "bf16", False, False, "device", small),
            Setting(arch, "bf16", True, False, "device", small),
            Setting(arch, "bf16", True, False, "device", large),
            Setting(arch, "bf16", True, False, "loader", large),
        ]
    return grid


def random_images(n: int, classes: int = 10, seed: int = 0) -> ImageSet:
    """Random uint8 images: the step's speed does not depend on what the pixels show."""
    rng = np.random.default_rng(seed)
    return ImageSet(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, classes, n).astype(np.int64))


class TimedBatches:
    """Wraps a batch iterator and adds up the time spent waiting for each next batch."""

    def __init__(self, batches: Iterator) -> None:
        self.batches, self.waited = batches, 0.0

    def __iter__(self) -> "TimedBatches":
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self.batches)
        finally:
            self.waited += time.perf_counter() - start


class StepsOf:
    """A feeder-shaped view of the next `steps` batches of a shared iterator (one "epoch" of them)."""

    def __init__(self, batches: Iterator, steps: int) -> None:
        self.batches, self.steps = batches, steps

    def __len__(self) -> int:
        return self.steps

    def epoch(self, epoch: int) -> Iterator:
        return itertools.islice(self.batches, self.steps)


class Feeders:
    """The stage's feeder (run.build_feeder) per (feeding, batch), built on first use and shared by
    the settings: loader workers start once."""

    def __init__(self, images: ImageSet, device: torch.device, workers: int) -> None:
        self.images, self.device, self.workers = images, device, workers
        self.mean, self.std = channel_stats(images.images)
        self.cache: dict[tuple[str, int], Any] = {}

    def get(self, feeding: str, batch: int):
        key = (feeding, batch)
        if key not in self.cache:
            cfg = train_cfg(batch, "fp32", False, {"data_on_device": feeding == "device", "num_workers": self.workers})
            self.cache[key] = build_feeder(self.images, cfg, self.mean, self.std, 0, self.device)
        return self.cache[key]


def train_cfg(batch: int, precision: str, channels_last: bool, extra: Optional[dict] = None):
    train = {"epochs": 1, "batch_size": batch, "scheduler": "none", "augment": SEED001_AUGMENT, "precision": precision,
             "channels_last": channels_last, "label_smoothing": 0.1, **(extra or {})}
    return validate_params({"train": train}).train


def run_params(model_cfg: ModelParams, cfg: TrainParams) -> Params:
    """Params of a run of `model_cfg` trained as `cfg` asks, seed 0: what `build_run` takes."""
    return validate_params({}).model_copy(update={"seed": 0, "model": model_cfg, "train": cfg})


def class_names(images: ImageSet) -> list[str]:
    return [str(label) for label in range(int(images.labels.max()) + 1)]


def whole_chunks(steps: int, batch: int, device: torch.device) -> int:
    """`steps` rounded up to whole chunks of the device feeder's augmentation (it augments many
    batches at once on a GPU): a window that starts at a chunk's first batch then pays its
    full share of that work, neither all of it in a few steps nor none of it."""
    chunk = chunk_batches(batch, device)
    return -(-steps // chunk) * chunk


def measure_setting(setting: Setting, mode: Mode, feeders: Feeders, device: torch.device) -> dict[str, Any]:
    """Images/s of train_one_epoch over timed_steps steps, after warmup_steps on the same iterator
    (for on-device feeding both rounded up to whole augmentation chunks)."""
    cfg = train_cfg(setting.batch, setting.precision, setting.channels_last, {"compile": setting.compile})
    images = feeders.images
    # The stage's run and fit's setup of it, fed from this grid's shared, timed feeder.
    params = run_params(model_params(setting.arch, mode.width), cfg)
    run = build_run(params, images, images.subset([0]), [str(c) for c in range(10)], device).run  # validation is not timed
    trainable, precision, scaler = prepare(run)
    batches = TimedBatches(iter(feeders.get(setting.feeding, setting.batch).epoch(1)))
    warmup_steps, timed_steps = mode.warmup_steps, mode.timed_steps
    if setting.feeding == "device":
        warmup_steps, timed_steps = (whole_chunks(n, setting.batch, device) for n in (warmup_steps, timed_steps))

    def run_steps(steps: int) -> None:
        run.feeder = StepsOf(batches, steps)
        train_one_epoch(trainable, run, 1, scaler, precision)
        synchronize(device)

    started = time.perf_counter()
    run_steps(warmup_steps)  # cuDNN autotuning, allocator growth, compilation, worker start-up
    warmup_s = time.perf_counter() - started
    batches.waited = 0.0
    started = time.perf_counter()
    run_steps(timed_steps)
    seconds = time.perf_counter() - started
    return {"images_per_s": round(timed_steps * setting.batch / seconds, 1),
            "step_ms": round(1000 * seconds / timed_steps, 2), "timed_steps": timed_steps,
            "data_wait_share": round(batches.waited / seconds, 3), "warmup_s": round(warmup_s, 1)}


def throughput(settings: list[Setting], mode: Mode, device: torch.device, workers: int, clock: Clock,
               reserve: float) -> list[dict[str, Any]]:
    """One row per setting; settings that would eat into `reserve` seconds are skipped."""
    # Enough images for the longest warm-up + timed window of one epoch, at either batch size.
    needed = max((whole_chunks(mode.warmup_steps, b, device) + whole_chunks(mode.timed_steps, b, device) + 1) * b
                 for b in mode.batches)
    images = random_images(needed)
    feeders = Feeders(images, device, workers)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    rows = []
    for setting in settings:
        row: dict[str, Any] = {**asdict(setting), "width": mode.width}
        if clock.left() < reserve:
            row["skipped"] = "time budget"
        else:
            row.update(guarded(lambda: measure_setting(setting, mode, feeders, device)))
        rows.append(row)
        print(f"throughput {row}", flush=True)
    return rows


# ---------------------------------------------------------------------------------------
# Inference latency
# ---------------------------------------------------------------------------------------


def gpu_latency_models(model: torch.nn.Module, device: torch.device, traced_path: Path) -> dict[str, Callable]:
    """Eager fp32, eager bf16 + channels_last and the traced TorchScript file, on the GPU."""
    from cifar_resnet.export import load_scripted

    eager = copy.deepcopy(model).to(device).eval()
    fast = copy.deepcopy(model).to(device, memory_format=torch.channels_last).eval()

    def bf16_channels_last(images: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return fast(images.contiguous(memory_format=torch.channels_last))

    return {"cuda_eager": eager, "cuda_eager_bf16_channels_last": bf16_channels_last,
            "cuda_traced": load_scripted(traced_path, map_location=device)}


def latency(mode: Mode, device: torch.device, folder: Path) -> dict[str, Any]:
    """The export stage's latency table (CPU, every exported format), plus GPU rows on a GPU."""
    from cifar_resnet.export import load_exports, write_exports
    from cifar_resnet.latency import bf16_skip_reason, latency_models, latency_rows

    seed_everything(0)
    model = prepare_model(model_params("resnet18", mode.width), 10).model.eval()
    images = torch.randn(max(mode.latency_batches), 3, 32, 32)
    try:
        import onnx  # noqa: F401 - only to know whether ONNX export can run

        with_onnx = True
    except ImportError:
        with_onnx = False
    paths = write_exports(model, images[:1], folder, onnx=with_onnx)
    cpu_batches = tuple(min(b, 64) for b in mode.latency_batches)  # the CPU rows as the export stage times them
    rows = latency_rows(latency_models(model, load_exports(paths), bf16_skip_reason()), images, cpu_batches,
                        warmup=3, repeats=mode.latency_repeats)
    for row in rows:
        row["device"] = "cpu"
    if device.type == "cuda":
        gpu_rows = latency_rows(gpu_latency_models(model, device, paths["traced"]), images.to(device),
                                mode.latency_batches, warmup=10, repeats=mode.latency_repeats)
        rows += [{**row, "device": str(device)} for row in gpu_rows]
    return {"model": f"resnet18 width {mode.width}", "onnx": with_onnx, "rows": rows}


# ---------------------------------------------------------------------------------------
# Data-parallel training (train.nproc)
# ---------------------------------------------------------------------------------------


def ddp_processes(device: torch.device) -> tuple[int, Optional[str]]:
    """How many processes a DDP run gets, or why it is skipped."""
    if device.type == "cuda":
        count = torch.cuda.device_count()
        return (count, None) if count > 1 else (0, "1 GPU: NCCL runs one process per GPU")
    return 2, None  # on the CPU, two gloo processes exercise the same code path


def ddp(args: argparse.Namespace, device: torch.device, out: Path, clock: Clock) -> dict[str, Any]:
    nproc, skipped = ddp_processes(device)
    if skipped:
        return {"skipped": skipped}
    if clock.left() < 90:
        return {"skipped": "time budget"}
    result_file = out / "ddp_rank0.json"
    command = torchrun_command(nproc, [__file__, "--ddp-worker", "--out", str(out), "--device", device.type]
                               + (["--quick"] if args.quick else []))
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, timeout=max(60, clock.left() - 30))
    if finished.returncode != 0:
        tail = (finished.stdout + finished.stderr).strip().splitlines()[-5:]
        return {"error": f"torchrun exited with {finished.returncode}: " + " | ".join(tail)}
    result = json.loads(result_file.read_text())
    result_file.unlink()
    return {**result, "processes": nproc, "wall_s": round(time.perf_counter() - started, 1)}


def ddp_worker(args: argparse.Namespace) -> None:
    """One torchrun process: fit() two epochs on this rank's shard, as the train stage does with nproc > 1."""
    mode = Mode.pick(args.quick)
    device, info = join_devices(args.device)  # as the train stage's start_run
    global_batch = mode.batches[1]
    cfg = train_cfg(global_batch, "bf16" if device.type == "cuda" else "fp32", device.type == "cuda",
                    {"epochs": 2, "nproc": info.world_size, "data_on_device": True})
    images = random_images(mode.ddp_images)
    result = fit_run(images, random_images(max(64, global_batch), seed=1), cfg, model_params("resnet18", mode.width), device, info)
    if info.is_main:
        (Path(args.out) / "ddp_rank0.json").write_text(json.dumps(result))
    shutdown(info)


def fit_run(train: ImageSet, test: ImageSet, cfg, model_cfg, device: torch.device,
            info: DistInfo = DistInfo(), deadline: Optional[float] = None) -> dict[str, Any]:
    """fit() with on-device feeding; per-epoch wall times and accuracies. Stops at `deadline` (perf_counter)."""
    # The stage's run; the test split stands in for validation: the report measures time to a test accuracy.
    run = build_run(run_params(model_cfg, cfg), train, test, class_names(train), device, info).run
    run.eval_batch_size = 1024
    feeder = run.feeder
    epochs: list[dict[str, float]] = []
    started = time.perf_counter()

    def on_epoch_end(result) -> None:
        epochs.append({"epoch": result.epoch, "seconds": round(time.perf_counter() - started, 2),
                       "test_acc": round(result.val_acc, 4),
                       "train_loss": None if math.isnan(result.train_loss) else round(result.train_loss, 4)})  # JSON has no NaN
        print(f"fit {epochs[-1]}", flush=True)
        if deadline is not None and time.perf_counter() > deadline:
            raise OutOfTime

    stop_reason = "out of time"
    with tempfile.TemporaryDirectory() as checkpoints:
        try:
            stop_reason = fit(run, checkpoints, on_epoch_end=on_epoch_end).stop_reason
        except OutOfTime:
            pass
    trained = [e for e in epochs if e["epoch"] > 0]
    # The evaluate stage's flip TTA (evaluate.tta) of the last epoch's weights, beside the plain
    # accuracies fit() measured: not timed, and not what the target is checked against.
    precision = Precision.for_run(cfg, device)
    tta_logits = flip_tta_logits(lambda images: evaluate_logits(run.model, images, run.eval_batch_size, device,
                                                                precision.channels_last, precision.amp_dtype),
                                 run.val_images)
    images_per_epoch = len(feeder) * cfg.batch_size
    # Epoch 2 on: the first epoch carries the warm-up (cuDNN autotuning, allocator growth).
    steady = trained[-1]["seconds"] - trained[0]["seconds"] if len(trained) > 1 else 0.0
    return {"epochs": epochs, "stop_reason": stop_reason, "parameters": count_parameters(run.model),
            "final_flip_tta_acc": round((tta_logits.argmax(1) == run.val_labels).float().mean().item(), 4),
            "seconds": epochs[-1]["seconds"] if epochs else None,
            "images_per_s_after_first_epoch": round(images_per_epoch * (len(trained) - 1) / steady, 1) if steady > 0 else None}


class OutOfTime(Exception):
    """Raised from fit's epoch callback when the report's budget for a run is spent."""


# ---------------------------------------------------------------------------------------
# The CPU recipe against airbench94 on real CIFAR-10 (JPEG ImageFolder), on this card
# ---------------------------------------------------------------------------------------


def parity_sizes(mode: Mode) -> tuple[tuple[str, ...], Any]:
    """The recipe's overrides and the reference's hyperparameters: as published, or tiny for --quick."""
    if not mode.quick_parity:
        return (), airbench_parity.reference.Hyper()
    hyper = airbench_parity.reference.Hyper(batch_size=16, epochs=2, widths=(4, 16, 16), whiten_images=64)
    return ("model.width=4", "train.batch_size=16", "train.epochs=2"), hyper


def recipe_against_reference(args: argparse.Namespace, mode: Mode, device: torch.device, clock: Clock) -> dict[str, Any]:
    """benchmarks/airbench_parity.py on this device: the reference and the CPU recipe, seeds 0 and 1,
    trained on train/ and scored on test/; both times cover images in memory to a trained model."""
    if args.cifar is None:
        return {"skipped": "no --cifar PATH (a JPEG ImageFolder copy of CIFAR-10)"}
    started = time.perf_counter()
    train, test, scored = airbench_parity.read_split(Path(args.cifar).expanduser())
    decode_s = time.perf_counter() - started
    if clock.left() < 60 + args.reserve:
        return {"skipped": "time budget", "decode_s": round(decode_s, 1)}
    extra, hyper = parity_sizes(mode)
    rows = airbench_parity.side_by_side(train, test, [0, 1], device.type, "cpu", extra, hyper)
    return {"train_images": len(train), "test_images": len(test), "scored_on": scored, "decode_s": round(decode_s, 1),
            "runs": rows, "summary": airbench_parity.summary(rows), "recipe_overrides": list(extra)}


# ---------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------


def without_nan(value: Any) -> Any:
    """NaN and infinities as null: strict JSON readers reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(item) for item in value]
    return value


def write_partial(out: Path, report: dict[str, Any]) -> None:
    """report.json so far, marked incomplete; the finished report replaces it."""
    (out / "report.json").write_text(json.dumps(without_nan({**report, "complete": False}), indent=2, default=str) + "\n")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for report.json and report.md")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny widths and few steps (about 2 minutes on a CPU)")
    parser.add_argument("--cifar", type=Path, help="CIFAR-10 JPEGs: folder or tar(.gz) with train/<class>/, test/<class>/")
    parser.add_argument("--workers", type=int, help="DataLoader workers (default: 0 with --quick, else min(8, CPUs - 1))")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the sections (default 8 minutes; start-up and "
                        "a section already running come on top)")
    parser.add_argument("--reserve", type=float, help="seconds kept for the compiled rows (default 225, 0 with --quick)")
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers is None:
        args.workers = 0 if args.quick else max(1, min(8, (os.cpu_count() or 2) - 1))
    if args.reserve is None:
        args.reserve = 0.0 if args.quick else 225.0  # three compiled rows, about 75 s each
    return args


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    if args.ddp_worker:
        ddp_worker(args)
        return
    clock, mode, device = Clock(args.budget), Mode.pick(args.quick), torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    # Compile is skipped in --quick: inductor's first compilation alone takes minutes on a small CPU.
    compile_rows = throughput_grid(mode, compiled=True)
    report: dict[str, Any] = {"quick": args.quick, "device": str(device), "environment": guarded(lambda: environment(device))}
    plain = throughput(throughput_grid(mode, compiled=False), mode, device, args.workers, clock, reserve=args.reserve + 60)
    # report.json grows section by section: a run killed from outside still leaves what it measured.
    write_partial(args.out, {**report, "throughput": plain})
    with tempfile.TemporaryDirectory() as exports:
        report["latency"] = guarded(lambda: latency(mode, device, Path(exports)))
    write_partial(args.out, {**report, "throughput": plain})
    report["ddp"] = guarded(lambda: ddp(args, device, args.out, clock))
    report["recipe_vs_airbench94"] = guarded(lambda: recipe_against_reference(args, mode, device, clock))
    write_partial(args.out, {**report, "throughput": plain})
    if args.quick:
        compiled = [{**asdict(s), "width": mode.width, "skipped": "--quick (compiling takes minutes on a CPU)"}
                    for s in compile_rows]
    else:
        # A compiled row takes a minute or more (compilation), so one starts only with that much left.
        compiled = throughput(compile_rows, mode, device, args.workers, clock, reserve=75)
    report["throughput"] = plain + compiled
    report["wall_s"] = round(clock.elapsed(), 1)
    report["complete"] = True
    (args.out / "report.json").write_text(json.dumps(without_nan(report), indent=2, default=str) + "\n")
    (args.out / "report.md").write_text(markdown(report))
    print(f"wrote {args.out / 'report.json'} and {args.out / 'report.md'} in {report['wall_s']} s")


if __name__ == "__main__":
    main()
