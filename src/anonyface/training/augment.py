"""Augmentation: the data's flips and shift jitter, and DiffAugment on D's inputs.

* `flip_jitter` works on a batch of crops and their geometry (landmarks in
  crop pixels, erase and valid boxes): horizontal flip with the landmark pairs
  swapped, and an integer shift whose uncovered pixels become padding. Its
  random numbers come from a CPU `torch.Generator` (the same stream on every
  device, saved in the checkpoint).
* `exposure` darkens a share of crops as a camera would, and `low_resolution`
  resamples a share down and back up, as the runtime does with a small
  face's crop: the generator sees the scenes it will paint into.
* `diff_augment` (Zhao et al. 2020, "Differentiable Augmentation for
  Data-Efficient GAN Training"): colour, translation and cutout applied alike
  to real and generated inputs of D, differentiably; it draws from the global
  torch RNG of the device.
"""

from __future__ import annotations

import math

import torch

from .model import EXPR_FLIP_PERM, FLIP_PERM


def shift_images(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Move each image by integer (dx, dy) pixels, filling with zeros."""
    b, c, h, w = x.shape
    xs = torch.arange(w, device=x.device)[None] - dx[:, None]  # B×W source column
    ys = torch.arange(h, device=x.device)[None] - dy[:, None]
    okx = (xs >= 0) & (xs < w)
    oky = (ys >= 0) & (ys < h)
    x = x.gather(3, xs.clamp(0, w - 1)[:, None, None, :].expand(b, c, h, w))
    x = x.gather(2, ys.clamp(0, h - 1)[:, None, :, None].expand(b, c, h, w))
    keep = (oky[:, :, None] & okx[:, None, :])[:, None].to(x.dtype)
    return x * keep


def flip_jitter(
    img: torch.Tensor, lm: torch.Tensor, er: torch.Tensor, va: torch.Tensor, size: int,
    gen: torch.Generator | None, jitter: float = 0.03, expression: torch.Tensor | None = None,
) -> tuple:
    """Random horizontal flip and ±`jitter`·size integer shift of a batch.

    img B×3×S×S (any range, 0 = padding), lm B×5×2 crop pixels, er / va B×4
    integer boxes (x1, y1, x2, y2; modified in place). Eyes and mouth corners
    swap on a flip so that landmark 0 stays the eye on the image's left, and
    so do the eyes' openness in `expression` (B×5, returned as a fifth item
    when given).
    """
    dev = img.device
    b = len(img)
    s = size
    flip = (torch.rand(b, generator=gen) < 0.5).to(dev)
    j = max(0, int(round(jitter * s)))
    shift = torch.randint(-j, j + 1, (b, 2), generator=gen).to(dev)
    img = torch.where(flip[:, None, None, None], img.flip(3), img)
    lm_f = lm[:, list(FLIP_PERM)].clone()
    lm_f[..., 0] = s - lm_f[..., 0]
    lm = torch.where(flip[:, None, None], lm_f, lm)
    if expression is not None:
        expression = torch.where(flip[:, None], expression[:, list(EXPR_FLIP_PERM)], expression)
    for box in (er, va):
        fx1, fx2 = s - box[:, 2], s - box[:, 0]
        box[:, 0] = torch.where(flip, fx1, box[:, 0])
        box[:, 2] = torch.where(flip, fx2, box[:, 2])
    if j > 0:
        img = shift_images(img, shift[:, 0], shift[:, 1])
        lm = lm + shift[:, None, :].float()
        for box in (er, va):
            box += shift.repeat(1, 2)
            box.clamp_(0, s)
    if expression is not None:
        return img, lm, er, va, expression
    return img, lm, er, va


#: Defaults of `exposure` (a run keeps its own in the checkpoint's hparams).
EXPOSURE_P = 0.25
EXPOSURE_GAIN = 0.04


def exposure(img: torch.Tensor, gen: torch.Generator | None, p: float = EXPOSURE_P,
             min_gain: float = EXPOSURE_GAIN) -> torch.Tensor:
    """Darken a share `p` of a batch of 0–255 crops as a camera's exposure would: a gain
    in linear light, log-uniform in [`min_gain`, 1], on the face and its context alike.

    The training photos are lit portraits (a face in a dark ring is typically 90
    grey levels brighter than it); without this the generator paints bright
    faces into dark scenes, and no runtime correction can tell a dark scene from
    a dark backdrop (docs/blending.md).
    """
    b = len(img)
    dev = img.device
    on = (torch.rand(b, generator=gen) < p).to(dev)
    lg = torch.rand(b, generator=gen).to(dev) * math.log(min_gain)
    gain = torch.where(on, lg.exp(), torch.ones_like(lg))[:, None, None, None]
    lin = (img / 255.0).clamp(0, 1).pow(2.2) * gain
    return lin.pow(1 / 2.2) * 255.0


#: Default share of `low_resolution` crops (0: off; a run keeps its own in the checkpoint).
LOWRES_P = 0.0
LOWRES_MIN = 16


def low_resolution(img: torch.Tensor, gen: torch.Generator | None, p: float = LOWRES_P,
                   min_side: int = LOWRES_MIN) -> torch.Tensor:
    """Resample a share `p` of a batch of crops (face and context alike) down to a side
    uniform in [`min_side`, side) with area averaging, then back up bilinearly.

    At run time a face 20–40 px wide is painted from a crop of a few dozen
    pixels upsampled to the model's side: soft context with JPEG blocks. The
    training crops come from portraits, sharp at every size; a generator that
    never saw soft context reads it as something else (the exposure-augmented
    run painted dark faces into small faces' soft crops, docs/generator.md).
    """
    b, _, h, w = img.shape
    if p <= 0 or h <= min_side:
        return img
    on = torch.rand(b, generator=gen) < p
    sides = torch.randint(min_side, h, (b,), generator=gen)
    if not bool(on.any()):
        return img
    img = img.clone()
    for i in torch.nonzero(on).flatten().tolist():
        s = int(sides[i])
        small = torch.nn.functional.interpolate(img[i : i + 1], size=(s, s), mode="area")
        img[i : i + 1] = torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return img


def diff_augment(x: torch.Tensor, translation: float = 0.125, cutout: float = 0.5) -> torch.Tensor:
    """Augment a stacked D input (first 3 channels RGB in [-1, 1], the rest masks/maps).

    Colour (brightness, saturation, contrast) on the RGB channels only;
    translation by up to `translation`·side and a cutout square of
    `cutout`·side on all channels together, so masks and heat maps stay
    aligned with the image.
    """
    b, c, h, w = x.shape
    dev, dt = x.device, x.dtype
    rgb, rest = x[:, :3], x[:, 3:]
    rgb = rgb + (torch.rand(b, 1, 1, 1, device=dev, dtype=dt) - 0.5)  # brightness
    mean = rgb.mean(1, keepdim=True)
    rgb = (rgb - mean) * (torch.rand(b, 1, 1, 1, device=dev, dtype=dt) * 2) + mean  # saturation
    mean = rgb.mean((1, 2, 3), keepdim=True)
    rgb = (rgb - mean) * (torch.rand(b, 1, 1, 1, device=dev, dtype=dt) + 0.5) + mean  # contrast
    x = torch.cat([rgb, rest], 1)
    t = max(1, int(round(w * translation)))
    d = torch.randint(-t, t + 1, (b, 2), device=dev)
    x = shift_images(x, d[:, 0], d[:, 1])
    cs = max(1, int(round(w * cutout)))
    ox = torch.randint(0, w + (1 - cs % 2), (b, 1), device=dev)
    oy = torch.randint(0, h + (1 - cs % 2), (b, 1), device=dev)
    r = torch.arange(w, device=dev)[None]
    inx = ((r - ox + cs // 2) >= 0) & ((r - ox + cs // 2) < cs)
    iny = ((r - oy + cs // 2) >= 0) & ((r - oy + cs // 2) < cs)
    cut = (iny[:, :, None] & inx[:, None, :])[:, None].to(dt)
    return x * (1 - cut)
