"""Losses of the face generator, one step of G and one of D at a time
(the manner of stylegan2-ada-pytorch's `training/loss.py`).

G:  adv·softplus(−D(aug(fake)))                     non-saturating GAN loss
  + proj·(−mean P(φ(fake)))                         projected D (optional)
  + l1·|fake − real| over the erased pixels
  + perc·Σ_taps |φ(fake) − φ(real)|                 frozen ImageNet MobileNetV2
D:  softplus(D(aug(fake))) + softplus(−D(aug(real))) + lazy R1 on reals
P:  hinge: relu(1 − P(φ(real))) + relu(1 + P(φ(fake)))    (Projected GAN)

`ProjectedD` is a Projected-GAN / Vision-aided-GAN discriminator (Sauer et al.
2021; Kumari et al. 2022) built on the frozen MobileNetV2 taps the perceptual
loss computes anyway (strides 2, 4, 8, 16 of the `perc_size` input): per tap a
fixed random 1×1 projection (Projected GAN's cross-channel mixing, not
trained), the erase mask at that resolution as a condition channel, and a
small trained patch discriminator (spectral-norm stride-2 3×3 convs down to
4×4, then a 1×1 conv to logits). Reusing the perceptual taps makes it nearly
free on the CPU; it sees the features without DiffAugment (legs here see a
few passes over 34 k crops at most, where D overfitting is not the limit).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .augment import diff_augment

R1_INTERVAL = 16


class ProjectedD(nn.Module):
    """Patch discriminators on frozen feature maps (list of B×Ci×Si×Si, sides `sizes`)."""

    def __init__(self, channels: tuple[int, ...], sizes: tuple[int, ...], proj: int = 64, width: int = 64,
                 seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.heads = nn.ModuleList()
        for i, (c, s) in enumerate(zip(channels, sizes)):
            # Fixed random cross-channel mixing (Kaiming-uniform like a fresh 1×1 conv).
            bound = (6.0 / c) ** 0.5
            self.register_buffer(f"ccm{i}", (torch.rand(proj, c, 1, 1, generator=g) * 2 - 1) * bound)
            self.heads.append(_PatchD(proj + 1, width, s))

    def forward(self, feats: list[torch.Tensor], erase: torch.Tensor) -> torch.Tensor:
        """Logits B×K (all patches of all taps)."""
        out = []
        for i, (f, head) in enumerate(zip(feats, self.heads)):
            h = F.conv2d(f.float(), getattr(self, f"ccm{i}"))
            m = F.adaptive_avg_pool2d(erase, h.shape[-2:])
            out.append(head(torch.cat([h, m], 1)).flatten(1))
        return torch.cat(out, 1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _sn_conv(cin: int, cout: int, k: int, stride: int, pad: int) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(nn.Conv2d(cin, cout, k, stride, pad))


class _PatchD(nn.Module):
    """3×3 conv, then stride-2 4×4 convs down to 4×4 (none below), then a 1×1 conv to logits."""

    def __init__(self, cin: int, width: int, size: int):
        super().__init__()
        layers = [_sn_conv(cin, width, 3, 1, 1), nn.LeakyReLU(0.2)]
        while size > 4:
            layers += [_sn_conv(width, width, 4, 2, 1), nn.LeakyReLU(0.2)]
            size //= 2
        layers.append(_sn_conv(width, 1, 1, 1, 0))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


#: MobileNetV2 taps of `FeatureNet.TAPS`: channels and strides.
TAP_CHANNELS = (16, 24, 32, 96)
TAP_STRIDES = (2, 4, 8, 16)


def projected_d(perc_size: int, seed: int = 0) -> ProjectedD:
    """The ProjectedD for the perceptual taps of a `perc_size` input."""
    return ProjectedD(TAP_CHANNELS, tuple(max(1, perc_size // s) for s in TAP_STRIDES), seed=seed)


class FaceGANLoss:
    """The losses of one training step; backward passes included, optimizer steps not.

    `hp`: weights `adv`, `l1`, `perc`, `proj`, and `r1` (γ). `g_forward` /
    `d_forward` may be compiled versions of G and `D.forward_stacked`.
    """

    def __init__(self, G, D, featnet, hp: dict, perc_size: int, autocast, g_forward=None, d_forward=None,
                 P: ProjectedD | None = None, augment=diff_augment):
        self.G, self.D, self.P = G, D, P
        self.featnet, self.hp, self.perc_size, self.autocast = featnet, hp, perc_size, autocast
        self.g_forward = g_forward or G
        self.d_forward = d_forward or D.forward_stacked
        self.augment = augment
        self._f_real = self._f_fake = None

    def generator(self, image, erase, pad, lm, z, ex=None) -> tuple[torch.Tensor, dict]:
        """G's forward and backward: (fake, {g_adv, l1, perc, g_proj, loss_g})."""
        hp = self.hp
        self.D.requires_grad_(False)
        if self.P is not None:
            self.P.requires_grad_(False)
        with self.autocast:
            fake = self.g_forward(image, erase, pad, lm, z, ex)
            logits = self.d_forward(self.augment(self.D.inputs(fake, erase, pad, lm, ex))) if hp["adv"] > 0 else None
        fake32 = fake.float()
        adv = F.softplus(-logits.float()).mean() if logits is not None else fake32.new_zeros(())
        l1 = ((fake32 - image).abs() * erase).sum() / (erase.sum() * 3 + 1e-6)
        use_p = self.P is not None and hp.get("proj", 0) > 0
        if hp["perc"] > 0 or use_p:
            with self.autocast:
                with torch.no_grad():
                    f_real = self.featnet.taps(image, self.perc_size)
                f_fake = self.featnet.taps(fake, self.perc_size)
            perc = sum((a.float() - b.float()).abs().mean() for a, b in zip(f_fake, f_real))
            self._f_real, self._f_fake = f_real, [f.detach() for f in f_fake]
        else:
            perc = fake32.new_zeros(())
            self._f_real = self._f_fake = None
        g_proj = -self.P(f_fake, erase).float().mean() if use_p else fake32.new_zeros(())
        loss_g = hp["adv"] * adv + hp["l1"] * l1 + hp["perc"] * perc
        if use_p:
            loss_g = loss_g + hp["proj"] * g_proj
        loss_g.backward()
        self.D.requires_grad_(True)
        if self.P is not None:
            self.P.requires_grad_(True)
        return fake, {"g_adv": adv, "l1": l1, "perc": perc, "g_proj": g_proj, "loss_g": loss_g}

    def discriminator(self, fake, image, erase, pad, lm, step: int, ex=None) -> dict:
        """D's forward and backward (and lazy R1 every R1_INTERVAL steps): {d_loss, r1 (or None)}."""
        hp = self.hp
        d_loss = image.new_zeros(())
        r1 = None
        if hp["adv"] > 0:
            with self.autocast:
                d_fake = self.d_forward(self.augment(self.D.inputs(fake.detach(), erase, pad, lm, ex)))
                d_real = self.d_forward(self.augment(self.D.inputs(image, erase, pad, lm, ex)))
            d_loss = F.softplus(d_fake.float()).mean() + F.softplus(-d_real.float()).mean()
            d_loss.backward()
            if step % R1_INTERVAL == 0 and hp["r1"] > 0:
                real = image.detach().requires_grad_(True)
                out = self.D.forward_stacked(self.augment(self.D.inputs(real, erase, pad, lm, ex)))
                (grad,) = torch.autograd.grad(out.sum(), real, create_graph=True)
                r1 = grad.pow(2).sum((1, 2, 3)).mean()
                (r1 * (hp["r1"] / 2) * R1_INTERVAL).backward()
        return {"d_loss": d_loss, "r1": r1}

    def projected(self, erase) -> torch.Tensor:
        """P's hinge loss on the taps of the last G step (real, and fake detached); backward included."""
        if self.P is None or self._f_fake is None or self.hp.get("proj", 0) <= 0:
            return erase.new_zeros(())
        p_real = self.P(self._f_real, erase).float()
        p_fake = self.P(self._f_fake, erase).float()
        loss = F.relu(1 - p_real).mean() + F.relu(1 + p_fake).mean()
        loss.backward()
        return loss
