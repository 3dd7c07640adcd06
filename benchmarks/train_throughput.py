"""Training throughput: the full feeding + training step against the bare model step.

    python benchmarks/train_throughput.py                      # ResNet18 width 16, CPU
    python benchmarks/train_throughput.py --augment default    # params.yaml's crop + flip only
    python benchmarks/train_throughput.py --arch resnet34 --width 64 --device cuda --workers 8
    python benchmarks/train_throughput.py --batch 256 --precision bf16 --channels-last true
    python benchmarks/train_throughput.py --arch airbench --width 64 --batch 512 --on-device --augment default \
        --precision bf16 --channels-last true --compile   # the CPU recipe's step, compiled

Prints images/s of (1) the loader alone with seed 001's full augmentation (or the default
crop + flip), (2) the bare forward/backward/step on pre-made batches, (3) the real
`train_one_epoch` fed by the loader (augmentation, CutMix, progress bar, metrics), and
the ratio (3)/(2). (2) and (3) are each the best of --repeats passes, interleaved, so a
passing hiccup of the machine does not decide the ratio. --precision, --channels-last
and --compile apply to both (2) and (3): the same autocast dtype, memory format and
compilation, so the ratio is the pipeline's overhead at that setting. It prints figures,
with the load average; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from cifar_resnet.config import validate_params
from cifar_resnet.data.shapes import generate_shapes
from cifar_resnet.inference import autocast
from cifar_resnet.training import train_one_epoch
from cifar_resnet.training.loop import prepare
from cifar_resnet.training.run import build_run

AUGMENTS = {
    "seed001": {"crop_padding": 4, "border_mode": "constant", "hflip": True, "affine": {"p": 0.5},
                "erasing": {"p": 0.3}, "cutmix": {"p": 0.3}},
    "default": {},  # params.yaml's defaults: pad 4 + random crop, horizontal flip
}


def images_per_second(fn, images: int) -> float:
    start = time.perf_counter()
    fn()
    return images / (time.perf_counter() - start)


def main() -> None:
    """Build and prepare the run as the train stage does, time the bare and the full step alternately, print.

    One function on purpose: a benchmark reads best top to bottom, in the order it measures.
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--blocks", type=int, nargs=4, default=None, metavar="N",
                        help="per-stage block counts overriding the arch's (model.blocks), e.g. 1 1 1 1")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--on-device", action="store_true", help="feed from the device (every augmentation as batched tensor ops)")
    parser.add_argument("--augment", choices=sorted(AUGMENTS), default="seed001")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of (2) and (3); the best of each counts")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="autocast dtype of (2) and (3)")
    parser.add_argument("--channels-last", choices=["true", "false"], default="false",
                        help="channels_last model and batches in (2) and (3)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model of (2) and (3) (train.compile)")
    args = parser.parse_args()
    channels_last = args.channels_last == "true"

    device = torch.device(args.device)
    augment = dict(AUGMENTS[args.augment])
    params = validate_params({
        "seed": 0, "model": {"arch": args.arch, "width": args.width, "blocks": args.blocks},
        "train": {"epochs": 1, "batch_size": args.batch, "augment": augment, "scheduler": "none",
                  "num_workers": args.workers, "data_on_device": args.on_device, "precision": args.precision,
                  "channels_last": channels_last, "compile": args.compile}})
    train, _, classes = generate_shapes(args.images, 10, seed=0)
    # The train stage's run and fit's setup of it (precision, memory format, scaler, compile):
    # what is timed is what the stage trains.
    run = build_run(params, train, train.subset([0]), classes, device).run
    trainable, precision, scaler = prepare(run)
    model, feeder, optimizer = run.model, run.feeder, run.optimizer
    steps = len(feeder)
    images = steps * args.batch
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    # Warm up: worker start-up, allocator, kernels.
    list(feeder.epoch(0))
    train_one_epoch(trainable, run, 0, scaler, precision)  # and, with --compile, compilation
    sync()

    loader_rate = images_per_second(lambda: [b for b in feeder.epoch(1)], images)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    # Feeder batches come mixed (CutMix/MixUp); the bare loop trains on the first targets only.
    batches = [(b.images.to(device).contiguous(memory_format=memory_format), b.labels_a.to(device))
               for b in feeder.epoch(2)]

    def bare() -> None:
        model.train()
        for x, y in batches:
            with autocast(device, precision.amp_dtype):
                loss = torch.nn.functional.cross_entropy(trainable(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        sync()

    def full(epoch: int) -> None:
        train_one_epoch(trainable, run, epoch, scaler, precision)
        sync()

    load_before = os.getloadavg()
    bare_rates, full_rates = [], []
    for repeat in range(args.repeats):
        bare_rates.append(images_per_second(bare, images))
        full_rates.append(images_per_second(lambda: full(3 + repeat), images))
    bare_rate, full_rate = max(bare_rates), max(full_rates)
    blocks = f" blocks {args.blocks}" if args.blocks else ""
    print(f"{args.arch}{blocks} width {args.width}, batch {args.batch}, {images} images, device {device}, "
          f"{'on-device feeding' if args.on_device else f'{args.workers} loader workers'}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"precision {args.precision}, channels_last {channels_last}, compile {args.compile}; load average "
          f"{' '.join(f'{x:.2f}' for x in load_before)} before timing, {' '.join(f'{x:.2f}' for x in os.getloadavg())} after")
    print(f"{f'loader alone ({args.augment} augmentation):':38}{loader_rate:9.1f} images/s")
    print(f"bare model step:                      {bare_rate:9.1f} images/s")
    print(f"full training step:                   {full_rate:9.1f} images/s")
    print(f"ratio full / bare:                    {full_rate / bare_rate:9.3f}")


if __name__ == "__main__":
    main()
