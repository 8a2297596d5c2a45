"""Small model builders made only of layers Opacus supports (no BatchNorm).

Every model takes a flat float tensor of ``num_features`` columns and returns
``num_classes`` logits (binary tasks use 2 logits with cross-entropy, which is
equivalent to a sigmoid on the logit difference). The CNN reshapes its flat input to
``input_shape`` itself, so serving code always feeds a feature vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["CNN", "MLP", "LogisticRegression"]


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: one linear layer."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(num_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of shape (batch, num_classes) for ``x`` of shape (batch, num_features)."""
        out: Tensor = self.linear(x)
        return out


class MLP(nn.Module):
    """Fully connected network with ReLU activations."""

    def __init__(
        self, num_features: int, num_classes: int, hidden: Sequence[int] = (128, 128)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = num_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of shape (batch, num_classes) for ``x`` of shape (batch, num_features)."""
        out: Tensor = self.net(x)
        return out


class CNN(nn.Module):
    """Two conv blocks (GroupNorm instead of BatchNorm, which breaks per-sample DP)."""

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        input_shape: Sequence[int] | None = None,
        channels: Sequence[int] = (16, 32),
    ) -> None:
        super().__init__()
        if input_shape is None:
            side = math.isqrt(num_features)
            if side * side != num_features:
                raise ValueError(
                    f"model=cnn needs square image inputs or an input_shape; got "
                    f"{num_features} features"
                )
            input_shape = (1, side, side)
        c, h, w = (int(v) for v in input_shape)
        if c * h * w != num_features:
            raise ValueError(
                f"input_shape {tuple(input_shape)} does not match {num_features} features"
            )
        self.input_shape = (c, h, w)
        c1, c2 = (int(v) for v in channels)
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 3, padding=1),
            nn.GroupNorm(min(4, c1), c1),
            nn.ReLU(),
            nn.MaxPool2d(2) if min(h, w) >= 8 else nn.Identity(),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.GroupNorm(min(4, c2), c2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d((4, 4)),
        )
        self.head = nn.Linear(c2 * 16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (batch, num_classes) for flat ``x`` (batch, num_features).

        ``x`` is reshaped to ``input_shape`` first.
        """
        x = x.reshape(x.shape[0], *self.input_shape)
        out: Tensor = self.head(self.features(x).flatten(1))
        return out
