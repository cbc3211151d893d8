"""Generator and discriminator of the face anonymizer (dense, explicit torch).

The generator is a U-Net in the manner of DeepPrivacy2: an encoder takes the
erased crop, the erase and padding masks and five landmark heat maps down to
8×8; a decoder modulated by w = mapping(z) (StyleGAN2 modulated convolutions
with weight demodulation) brings it back up, with the encoder's features added
at every resolution and the heat maps injected again at every resolution.

Privacy: the first thing `Generator.forward` does is `image * (1 - erase)`, so
no erased pixel reaches the network whatever the caller passes; the output is
composited as `image * (1 - erase) + gen * erase`.

Everything is written with ops that export to ONNX opset 17 with a dynamic
batch: the modulation is applied to the activations (x·s, shared conv, ·d)
rather than by grouped convolution with per-sample weights (StyleGAN2's
`fused_modconv=False`, mathematically the same).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class Config:
    """One model size. `channels` maps resolution → feature channels (G and D)."""

    name: str
    size: int  # crop side the models work at
    zdim: int = 64
    wdim: int = 128
    mapping_layers: int = 2
    g_channels: dict = field(default_factory=dict)  # {res: ch} for res = size .. bottom
    d_channels: dict = field(default_factory=dict)  # {res: ch} for res = size .. 4
    bottom: int = 8  # encoder's lowest resolution
    sigma: float = 0.025  # heat-map Gaussian sigma, fraction of the crop side
    # training defaults
    batch: int = 16
    lr: float = 0.002
    ema_kimg: float = 2.0
    r1_gamma: float = 1.0
    l1_weight: float = 1.0
    perc_weight: float = 1.0
    adv_weight: float = 0.1
    proj_weight: float = 0.0  # projected discriminator on frozen MobileNetV2 features (loss.ProjectedD)
    edim: int = 0  # expression conditions (anonyface.expression); 0: landmarks only
    core: int = 0  # a grown model's inner resolution (`grow`); 0: not grown

    def inner(self) -> "Config":
        """The config of a grown model's inner networks (at `core` px)."""
        from dataclasses import replace

        return replace(self, size=self.core, core=0,
                       g_channels={r: c for r, c in self.g_channels.items() if r <= self.core},
                       d_channels={r: c for r, c in self.d_channels.items() if r <= self.core})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["g_channels"] = {str(k): v for k, v in self.g_channels.items()}
        d["d_channels"] = {str(k): v for k, v in self.d_channels.items()}
        return d

    @staticmethod
    def from_dict(d: dict) -> "Config":
        d = dict(d)
        d["g_channels"] = {int(k): v for k, v in d["g_channels"].items()}
        d["d_channels"] = {int(k): v for k, v in d["d_channels"].items()}
        return Config(**d)


CONFIGS = {
    # The CPU test suite: a step in a fraction of a second.
    "tiny": Config(
        "tiny", 32, zdim=16, wdim=32, mapping_layers=1,
        g_channels={32: 8, 16: 16, 8: 24}, d_channels={32: 8, 16: 16, 8: 24, 4: 24},
        batch=4, ema_kimg=0.01,
    ),
    # What two CPU cores can train in an hour (64 px: at 128 px a CPU step is
    # about 4× slower); the runtime resizes its 64-px output to the crop.
    "cpu": Config(
        "cpu", 64, zdim=64, wdim=128, mapping_layers=2,
        g_channels={64: 16, 32: 32, 16: 64, 8: 128},
        d_channels={64: 16, 32: 32, 16: 64, 8: 128, 4: 128},
        batch=16, ema_kimg=1.0,
        proj_weight=0.1,  # the recipe chosen by the A/B of docs/generator.md
    ),
    # For GPU legs: 128 px; sized so that its ONNX export stays inside
    # 15 ms per face on two CPU cores (0.9 GFLOP per face).
    "base": Config(
        "base", 128, zdim=64, wdim=256, mapping_layers=4,
        g_channels={128: 12, 64: 24, 32: 48, 16: 96, 8: 192},
        d_channels={128: 16, 64: 32, 32: 64, 16: 128, 8: 192, 4: 192},
        batch=64, ema_kimg=5.0,
        proj_weight=0.1,
    ),
    # The photo tier: the `cpu` model grown to 128 px (`grow`): one more level
    # on top of a trained 64-px network, whose output starts as the 64-px face
    # upsampled and learns the detail a 128-px face has.
    "quality": Config(
        "quality", 128, zdim=64, wdim=128, mapping_layers=2,
        g_channels={128: 12, 64: 16, 32: 32, 16: 64, 8: 128},
        d_channels={128: 16, 64: 16, 32: 32, 16: 64, 8: 128, 4: 128},
        batch=16, ema_kimg=1.0, proj_weight=0.1, core=64,
    ),
}

#: Landmark order: left eye, right eye, nose, left mouth, right mouth (as the
#: detector gives them); a horizontal flip swaps the pairs.
FLIP_PERM = (1, 0, 2, 4, 3)
#: Expression order (anonyface.expression.EXPRESSION_NAMES): mouth open, left
#: eye open, right eye open, smile, brow raise; a flip swaps the eyes.
EXPRESSION_DIM = 5
EXPR_FLIP_PERM = (0, 2, 1, 3, 4)


# -- building blocks ---------------------------------------------------------------

def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * SQRT2


class EqLinear(nn.Module):
    """Linear layer with equalized learning rate (weights N(0,1), scaled at run time)."""

    def __init__(self, cin: int, cout: int, bias_init: float = 0.0, lr_mul: float = 1.0, act: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mul)
        self.bias = nn.Parameter(torch.full((cout,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(cin)
        self.lr_mul = lr_mul
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return lrelu(x) if self.act else x


class EqConv(nn.Module):
    """Conv with equalized learning rate, optional stride 2 and activation."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, act: bool = True, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale = 1.0 / math.sqrt(cin * k * k)
        self.stride, self.pad, self.act = stride, (k - 1) // 2, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.scale, self.bias, self.stride, self.pad)
        return lrelu(x) if self.act else x


class ModConv(nn.Module):
    """StyleGAN2 modulated 3×3 conv with demodulation, applied to activations.

    y = conv(x · s) · d + b with s = affine(w) and d = 1/sqrt(Σ (W·s)²): the
    same as convolving with per-sample demodulated weights.
    """

    def __init__(self, cin: int, cout: int, wdim: int, k: int = 3, demod: bool = True, act: bool = True):
        super().__init__()
        self.affine = EqLinear(wdim, cin, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = 1.0 / math.sqrt(cin * k * k)
        self.pad, self.demod, self.act = (k - 1) // 2, demod, act

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w)  # B×Cin
        weight = self.weight * self.scale
        x = F.conv2d(x * s[:, :, None, None], weight, None, 1, self.pad)
        if self.demod:
            wsq = weight.pow(2).sum((2, 3))  # Cout×Cin
            d = torch.rsqrt(s.pow(2) @ wsq.t() + 1e-8)  # B×Cout
            x = x * d[:, :, None, None]
        x = x + self.bias[None, :, None, None]
        return lrelu(x) if self.act else x


def heatmaps(landmarks: torch.Tensor, res: int, sigma: float) -> torch.Tensor:
    """B×5×res×res Gaussian maps of landmarks (B×5×2, normalised to [0, 1])."""
    coords = (torch.arange(res, dtype=landmarks.dtype, device=landmarks.device) + 0.5) / res
    lx = landmarks[:, :, 0:1]  # B×5×1
    ly = landmarks[:, :, 1:2]
    gx = (coords[None, None, :] - lx).pow(2)  # B×5×res
    gy = (coords[None, None, :] - ly).pow(2)
    inv = -1.0 / (2.0 * sigma * sigma)
    return torch.exp(gy.unsqueeze(3) * inv) * torch.exp(gx.unsqueeze(2) * inv)  # B×5×res×res


# -- generator ---------------------------------------------------------------------

class Mapping(nn.Module):
    def __init__(self, zdim: int, wdim: int, layers: int):
        super().__init__()
        dims = [zdim] + [wdim] * layers
        self.layers = nn.ModuleList(EqLinear(a, b, lr_mul=0.01, act=True) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
        for layer in self.layers:
            z = layer(z)
        return z


class Generator(nn.Module):
    """forward(image, erase, pad, landmarks, z, expression=None) → image, all B-first:

    image B×3×S×S in [-1, 1]; erase, pad B×1×S×S (1 = erased / padding);
    landmarks B×5×2 in [0, 1] of the crop; z B×zdim; expression B×edim
    normalised scalars (when config.edim > 0; None = neutral). Returns
    B×3×S×S with the non-erased pixels equal to the input's.

    The expression enters as an offset of the style w (every modulated conv
    sees it) and as constant planes beside the landmark heat maps at the
    bottom of the decoder, where the mouth and eyes are a pixel or two. Both
    start at zero (`add_expression`), so a landmarks-only checkpoint grows
    the conditions without forgetting what it learned.
    """

    IN_CH = 3 + 1 + 1 + 5

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        c = config
        if c.core:
            self._init_grown(c)
            return
        self.body = None
        self.resolutions = [r for r in sorted(c.g_channels, reverse=True) if r >= c.bottom]
        assert self.resolutions[0] == c.size, "g_channels must start at the crop size"
        ch = c.g_channels
        self.mapping = Mapping(c.zdim, c.wdim, c.mapping_layers)
        self.from_in = EqConv(self.IN_CH, ch[c.size], k=1)
        self.enc = nn.ModuleList()  # at res r: conv (r) then down to r/2
        for r in self.resolutions[:-1]:
            self.enc.append(nn.ModuleList([EqConv(ch[r], ch[r]), EqConv(ch[r], ch[r // 2], stride=2)]))
        b = c.bottom
        self.mid = nn.ModuleList([EqConv(ch[b], ch[b]), ModConv(ch[b] + 5 + c.edim, ch[b], c.wdim)])
        if c.edim:
            self.expr = EqLinear(c.edim, c.wdim)
            nn.init.zeros_(self.expr.weight)
        self.dec = nn.ModuleList()  # at res r: up from r/2, modconv (+heat), skip add, modconv
        for r in reversed(self.resolutions[:-1]):
            self.dec.append(
                nn.ModuleList([ModConv(ch[r // 2] + 5, ch[r], c.wdim), ModConv(ch[r], ch[r], c.wdim)])
            )
        self.to_rgb = ModConv(ch[c.size], 3, c.wdim, k=1, demod=False, act=False)

    def _init_grown(self, c: Config) -> None:
        """A grown model (config.core > 0): the inner generator at `core` px
        plus one level at `size` = 2·core, in StyleGAN2's skip style: the inner
        RGB upsampled plus this level's RGB, which starts at zero (so a fresh
        growth paints exactly the inner model's face, upsampled)."""
        assert c.size == 2 * c.core, "a grown model adds one level: size = 2·core"
        self.body = Generator(c.inner())
        ch, s = c.g_channels, c.size
        self.resolutions = [s] + self.body.resolutions
        self.top_in = EqConv(self.IN_CH, ch[s], k=1)
        self.top_enc = EqConv(ch[s], ch[s])
        self.top_up = ModConv(ch[c.core] + 5, ch[s], c.wdim)
        self.top_conv = ModConv(ch[s], ch[s], c.wdim)
        self.top_rgb = ModConv(ch[s], 3, c.wdim, k=1, demod=False, act=False)
        nn.init.zeros_(self.top_rgb.weight)

    def forward(self, image, erase, pad, landmarks, z, expression=None):
        keep = 1.0 - erase
        image = image * keep  # privacy: nothing under the erase mask goes further
        _, _, gen = self.synthesize(image, erase, pad, landmarks, z, expression)
        return image + gen * erase

    def synthesize(self, image, erase, pad, landmarks, z, expression=None):
        """(features at the crop size, style w, RGB before compositing) — the
        generator without its final paste, for a grown model's outer level."""
        image = image * (1.0 - erase)
        c = self.config
        if self.body is not None:
            s = c.size
            skip = self.top_enc(self.top_in(torch.cat([image, erase, pad, heatmaps(landmarks, s, c.sigma)], 1)))
            # The inner model sees the crop at its size: masks grown outwards
            # (never less erased), pixels under the grown erase mask zero.
            erase2, pad2 = F.max_pool2d(erase, 2), F.max_pool2d(pad, 2)
            image2 = F.avg_pool2d(image, 2) * (1.0 - erase2)
            x, w, gen = self.body.synthesize(image2, erase2, pad2, landmarks, z, expression)
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = self.top_up(torch.cat([x, heatmaps(landmarks, s, c.sigma)], 1), w)
            x = self.top_conv((x + skip) * (1 / SQRT2), w)
            gen = F.interpolate(gen, scale_factor=2.0, mode="bilinear", align_corners=False) + self.top_rgb(x, w)
            return x, w, gen
        w = self.mapping(z)
        planes = []
        if c.edim:
            if expression is None:
                expression = z.new_zeros(len(z), c.edim)
            w = w + self.expr(expression)
            planes = [expression[:, :, None, None].expand(-1, -1, c.bottom, c.bottom)]
        x = torch.cat([image, erase, pad, heatmaps(landmarks, c.size, c.sigma)], 1)
        x = self.from_in(x)
        skips = []
        for conv, down in self.enc:
            x = conv(x)
            skips.append(x)
            x = down(x)
        x = self.mid[0](x)
        x = self.mid[1](torch.cat([x, heatmaps(landmarks, c.bottom, max(c.sigma, 1.0 / c.bottom))] + planes, 1), w)
        for (up_conv, conv), skip, res in zip(self.dec, reversed(skips), reversed(self.resolutions[:-1])):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            # at coarse resolutions a Gaussian is at least one pixel wide
            x = up_conv(torch.cat([x, heatmaps(landmarks, res, max(c.sigma, 1.0 / res))], 1), w)
            x = (x + skip) * (1 / SQRT2)
            x = conv(x, w)
        return x, w, self.to_rgb(x, w)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# -- discriminator -------------------------------------------------------------------

class DBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0 = EqConv(cin, cin)
        self.conv1 = EqConv(cin, cout, stride=2)
        self.skip = EqConv(cin, cout, k=1, act=False, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(self.conv0(x))
        s = self.skip(F.avg_pool2d(x, 2))
        return (y + s) * (1 / SQRT2)


class Discriminator(nn.Module):
    """Conditional residual discriminator with minibatch standard deviation.

    forward(image, erase, pad, landmarks, expression=None) → B logits. It sees
    the image together with the erase and padding masks, the landmark heat maps
    and (config.edim > 0) the expression scalars as constant planes, so a face
    that ignores its expression looks fake.
    """

    IN_CH = 3 + 1 + 1 + 5

    def __init__(self, config: Config, mbstd_group: int = 4):
        super().__init__()
        self.config = config
        c = config
        ch = c.d_channels
        self.resolutions = sorted(ch, reverse=True)
        assert self.resolutions[0] == c.size and self.resolutions[-1] == 4
        self.body = None
        if c.core:
            # A grown model: this level's block feeds the inner discriminator's
            # first features through a gate that starts at zero (ReZero), so the
            # grown D starts as the inner D on the downsampled input.
            assert c.size == 2 * c.core
            self.body = Discriminator(c.inner(), mbstd_group)
            self.top_in = EqConv(self.IN_CH + c.edim, ch[c.size], k=1)
            self.top_block = DBlock(ch[c.size], ch[c.core])
            self.gate = nn.Parameter(torch.zeros(()))
            return
        self.from_in = EqConv(self.IN_CH + c.edim, ch[c.size], k=1)
        self.blocks = nn.ModuleList(DBlock(ch[r], ch[r // 2]) for r in self.resolutions[:-1])
        self.mbstd_group = mbstd_group
        self.conv = EqConv(ch[4] + 1, ch[4])
        self.fc = EqLinear(ch[4] * 16, ch[4], act=True)
        self.out = EqLinear(ch[4], 1)

    def inputs(self, image, erase, pad, landmarks, expression=None) -> torch.Tensor:
        c = self.config
        x = [image, erase, pad, heatmaps(landmarks, c.size, c.sigma)]
        if c.edim:
            if expression is None:
                expression = image.new_zeros(len(image), c.edim)
            x.append(expression[:, :, None, None].to(image.dtype).expand(-1, -1, c.size, c.size))
        return torch.cat(x, 1)

    def forward_stacked(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for an input already stacked by `inputs` (and augmented)."""
        if self.body is not None:
            inner = self.body.from_in(F.avg_pool2d(x, 2))
            return self.body.trunk(inner + self.gate * self.top_block(self.top_in(x)))
        return self.trunk(self.from_in(x))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from the first features (after `from_in`)."""
        for block in self.blocks:
            x = block(x)
        x = self._mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        return self.out(x).squeeze(1)

    def forward(self, image, erase, pad, landmarks, expression=None) -> torch.Tensor:
        return self.forward_stacked(self.inputs(image, erase, pad, landmarks, expression))

    def _mbstd(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = min(self.mbstd_group, b)
        while b % g:
            g -= 1
        y = x.reshape(g, -1, c, h, w)
        y = (y - y.mean(0)).pow(2).mean(0).add(1e-8).sqrt()  # (B/g)×C×H×W
        y = y.mean((1, 2, 3)).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], 1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def get_config(name_or_dict) -> Config:
    if isinstance(name_or_dict, Config):
        return name_or_dict
    if isinstance(name_or_dict, dict):
        return Config.from_dict(name_or_dict)
    if name_or_dict not in CONFIGS:
        raise ValueError(f"unknown config {name_or_dict!r}; choose from {sorted(CONFIGS)}")
    return CONFIGS[name_or_dict]


def add_expression(config: Config, nets: dict, edim: int = EXPRESSION_DIM) -> tuple[Config, dict]:
    """A landmarks-only checkpoint's (config, state dicts) grown to `edim`
    expression conditions: the new input weights are zero, so the grown
    models compute exactly what the old ones did until training moves them."""
    if config.edim:
        return config, nets
    from dataclasses import replace

    new = replace(config, edim=edim)
    b = "body." if config.core else ""  # a grown model's inner nets hold the inputs
    out = {}

    def widen(w: torch.Tensor) -> torch.Tensor:
        # weight cout×cin×k×k scaled by 1/sqrt(cin·k²) at run time: new input
        # channels get zero weights, the old ones are rescaled so that
        # weight·scale (what the conv uses) stays the same.
        cin = w.shape[1]
        return torch.cat([w * math.sqrt((cin + edim) / cin), w.new_zeros(w.shape[0], edim, *w.shape[2:])], 1)

    for name, sd in nets.items():
        sd = dict(sd)
        if name in ("G", "G_ema"):
            # ModConv mid.1 gets the expression planes; its affine w → cin grows too.
            sd[b + "mid.1.weight"] = widen(sd[b + "mid.1.weight"])
            a = sd[b + "mid.1.affine.weight"]  # cin×wdim
            sd[b + "mid.1.affine.weight"] = torch.cat([a, torch.randn(edim, a.shape[1], dtype=a.dtype)], 0)
            sd[b + "mid.1.affine.bias"] = torch.cat([sd[b + "mid.1.affine.bias"], torch.ones(edim, dtype=a.dtype)])
            sd[b + "expr.weight"] = torch.zeros(new.wdim, edim, dtype=a.dtype)
            sd[b + "expr.bias"] = torch.zeros(new.wdim, dtype=a.dtype)
        elif name == "D":
            sd[b + "from_in.weight"] = widen(sd[b + "from_in.weight"])  # EqConv 1×1
            if b:
                sd["top_in.weight"] = widen(sd["top_in.weight"])
        out[name] = sd
    return new, out


def grow(config: Config, nets: dict, seed: int = 0) -> tuple[Config, dict]:
    """A trained (config, state dicts of G, D, G_ema) grown one level, to twice
    its size: the old networks become the inner ones (`body.*`), the new level
    is freshly initialised with its RGB output at zero and its D gate at zero,
    so the grown G paints the old face upsampled and the grown D judges the
    downsampled input as before. Other nets (the projected D, sized to the
    old crop) are dropped: they start fresh at the new size."""
    from dataclasses import replace

    if config.core:
        raise ValueError("this model is already grown; grow a plain one")
    s = config.size * 2
    new = replace(config, name="quality" if config.name == "cpu" else f"{config.name}-{s}", size=s, core=config.size,
                  g_channels={s: max(8, config.g_channels[config.size] * 3 // 4), **config.g_channels},
                  d_channels={s: config.d_channels[config.size], **config.d_channels})
    torch.manual_seed(seed)
    out = {}
    for name in ("G", "D", "G_ema"):
        fresh = (Discriminator(new) if name == "D" else Generator(new)).state_dict()
        for k, v in nets[name].items():
            fresh["body." + k] = v
        out[name] = fresh
    out["G_ema"] = {k: (out["G"][k] if not k.startswith("body.") else v) for k, v in out["G_ema"].items()}
    return new, out
