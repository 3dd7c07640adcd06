"""The one line printed per epoch, with an estimate of the time left."""

from __future__ import annotations

import math
import time

from .loop import EpochResult
from .schedule import epoch_count


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class EpochPrinter:
    """Formats `epoch 3/30  train loss ... acc ...  val loss ... acc ...  lr ...  [1m05s, about 9m40s left]`.

    Epoch 0 is the untrained model, measured on the validation split only. The time left
    is estimated from the epochs this process trained (not those restored on resume).
    A fractional train.epochs counts its partial last epoch: 9.9 prints `epoch 10/10`, never 10/9.9.
    """

    def __init__(self, epochs: float, first_trained: int) -> None:
        self.epochs, self.first_trained, self.started = epoch_count(epochs), first_trained, time.perf_counter()

    def line(self, result: EpochResult) -> str:
        val = f"val loss {result.val_loss:.4f} acc {result.val_acc:.4f}" if not math.isnan(result.val_acc) else "no val split"
        if result.epoch == 0:
            return f"epoch 0/{self.epochs}  untrained baseline: {val}"
        elapsed = time.perf_counter() - self.started
        trained = result.epoch - self.first_trained + 1
        left = f", about {_duration(elapsed / trained * (self.epochs - result.epoch))} left" if trained > 0 and result.epoch < self.epochs else ""
        return (f"epoch {result.epoch}/{self.epochs}  train loss {result.train_loss:.4f} acc {result.train_acc:.4f}  "
                f"{val}  lr {result.lr:.5f}  [{_duration(elapsed)}{left}]")
