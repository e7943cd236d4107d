"""An exponential moving average of the model's weights (EMA), validated and saved instead of the raw weights.

The average's decay warms up as ``min(decay, (1 + step) / (10 + step))`` so that early averages are not dominated
by the random initialisation. Integer buffers (BatchNorm's batch counter) are copied, not averaged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class WeightAverage:
    """The running average of a model's state dict."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight-average decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.average = {key: value.detach().clone() for key, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Fold the model's current weights into the average."""
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for key, value in model.state_dict().items():
            target = self.average[key]
            if target.is_floating_point():
                target.mul_(decay).add_(value.detach(), alpha=1.0 - decay)
            else:
                target.copy_(value)
        self.updates += 1

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """Inside the block the model holds the averaged weights; its own come back afterwards."""
        own = {key: value.detach().clone() for key, value in model.state_dict().items()}
        model.load_state_dict(self.average, strict=True)
        try:
            yield
        finally:
            model.load_state_dict(own, strict=True)

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "updates": self.updates, "average": self.average}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.updates = int(state["updates"])  # type: ignore[arg-type]
        average = state["average"]
        assert isinstance(average, dict)
        for key, value in average.items():
            self.average[key].copy_(value)
