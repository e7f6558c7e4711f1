"""Plain multi-layer perceptron (DETR's), keeping the ``layers.{i}`` checkpoint names."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (none after the last).

    Args:
        input_dim: input width.
        hidden_dim: width of every hidden layer.
        output_dim: output width.
        num_layers: number of Linear layers (>= 1).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLP needs at least one layer, got num_layers={num_layers}")
        self.num_layers = num_layers
        hidden = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(n, k) for n, k in zip([input_dim] + hidden, hidden + [output_dim])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., input_dim] -> [..., output_dim]."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return x
