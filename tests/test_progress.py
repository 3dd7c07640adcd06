"""The per-epoch progress line."""

import pytest

from cifar_resnet.training.loop import EpochResult
from cifar_resnet.training.progress import EpochPrinter

pytestmark = pytest.mark.timeout(60)


def result(epoch: int) -> EpochResult:
    return EpochResult(epoch=epoch, train_loss=1.0, train_acc=0.5, val_loss=1.1, val_acc=0.4, lr=0.01)


def test_a_fractional_run_counts_its_partial_last_epoch():
    printer = EpochPrinter(9.9, first_trained=1)
    assert printer.line(result(0)).startswith("epoch 0/10 ")
    middle, last = printer.line(result(5)), printer.line(result(10))
    assert middle.startswith("epoch 5/10 ") and "left]" in middle
    assert last.startswith("epoch 10/10 ") and "left" not in last  # nothing left after the partial last epoch


def test_a_whole_run_prints_its_epochs():
    assert EpochPrinter(3, first_trained=1).line(result(2)).startswith("epoch 2/3 ")
