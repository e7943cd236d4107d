"""Small building blocks shared by the backbone and the decoder: axis permutation, stochastic depth, MLP."""

from __future__ import annotations

import math

import torch
from torch import nn


class Permute(nn.Module):
    """``x.permute(*dims)`` as a module, so that it can sit inside ``nn.Sequential`` (it has no parameters)."""

    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class DropPath(nn.Module):
    """Stochastic depth: in training, zero whole samples with probability ``rate`` and rescale the others."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask_shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        mask = x.new_empty(mask_shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate:.3f}"


class Mlp(nn.Module):
    """Two linear layers with an exact GELU in between (``fc1`` -> GELU -> ``fc2``), channel-last."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)
        self.drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def trunc_normal_(tensor: torch.Tensor, std: float = 0.02, bound: float = 2.0) -> torch.Tensor:
    """Fill ``tensor`` from N(0, std) truncated to [-bound, bound] (absolute bounds, as in VMamba's init)."""
    with torch.no_grad():
        return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-bound, b=bound)


def inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    """y such that softplus(y) == x, for x > 0."""
    return x + torch.log(-torch.expm1(-x))


def default_linear_bound(fan_in: int) -> float:
    """Bound of PyTorch's default uniform initialisation of a Linear layer's weight."""
    return 1.0 / math.sqrt(fan_in)
