"""The base of both network classes: top-level modules that stay frozen while the rest trains."""

from __future__ import annotations

from torch import nn


class FreezableNetwork(nn.Module):
    """`frozen_modules` names top-level children kept in eval mode even when the model trains
    (set by `freeze_backbone`): frozen BatchNorm layers then keep their running statistics."""

    # Python-side training state, not part of the TorchScript model.
    __jit_ignored_attributes__ = ["frozen_modules"]

    def __init__(self) -> None:
        super().__init__()
        self.frozen_modules: tuple[str, ...] = ()

    def train(self, mode: bool = True) -> "FreezableNetwork":
        """As nn.Module.train, but the frozen modules stay in eval mode (no BN statistics updates)."""
        super().train(mode)
        for name in self.frozen_modules:
            getattr(self, name).eval()
        return self

    @staticmethod
    def default_cam_layer(stem: str) -> str:
        """The layer a class-activation map uses unless told otherwise (gradcam.target_layer auto):
        each network states its own, for the stem it was built with."""
        raise NotImplementedError
