"""Lookahead weight averaging after Keller Jordan's airbench94 (2024).

Every few optimiser steps the weights move to a running average that lags behind them,
and training goes on from there: `average <- decay * average + (1 - decay) * weights`,
then `weights <- average`. The decay grows with the cube of the run's progress, from 0
(no averaging: early training moves fast and an average would only hold it back) to
0.95**5 at the last step, so the end of the one-cycle schedule, when the weights jitter
around a minimum, is smoothed the most; after the last step the weights are the average. Jordan's numbers: an update every 5 steps, the
decay 0.95**5 times (step / total steps)**3.

Every floating-point tensor of the model's state is averaged, BatchNorm's running
statistics included (Jordan averages the whole state dict, so the statistics always
belong to the weights they normalise). The average is part of a checkpoint: between two
updates it differs from the weights, and a resumed run must continue from both.
"""

from __future__ import annotations

import torch

LOOKAHEAD_EVERY = 5  # optimiser steps between two updates
LOOKAHEAD_MAX_DECAY = 0.95**5  # the decay at the last step


def lookahead_decay(step: int, total_steps: int) -> float:
    """The average's share at optimiser step `step` (1-based) of `total_steps`: cubic in progress."""
    return LOOKAHEAD_MAX_DECAY * (step / total_steps) ** 3


class Lookahead:
    """The lagging average of a model's floating-point state, updated every LOOKAHEAD_EVERY steps and at the last."""

    def __init__(self, model: torch.nn.Module, total_steps: int) -> None:
        self.total_steps = total_steps
        self.average = {name: value.detach().clone() for name, value in self._averaged(model).items()}

    @staticmethod
    def _averaged(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        # Read afresh each time: moving a module (to a device, to channels_last) replaces its buffers.
        return {name: value for name, value in model.state_dict().items() if value.is_floating_point()}

    @torch.no_grad()
    def after_step(self, model: torch.nn.Module, step: int) -> None:
        """Call after optimiser step `step` (1-based, counted over the whole run).

        After the last step the weights become the average itself (Jordan's final update
        with decay 1): whatever the steps since the last update moved is dropped.
        """
        if step % LOOKAHEAD_EVERY == 0:
            self._update(model, lookahead_decay(step, self.total_steps))
        if step == self.total_steps:
            self._update(model, 1.0)

    def _update(self, model: torch.nn.Module, decay: float) -> None:
        for name, value in self._averaged(model).items():
            average = self.average[name]
            average.lerp_(value, 1.0 - decay)
            value.copy_(average)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.average)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, average in self.average.items():
            average.copy_(state[name])
