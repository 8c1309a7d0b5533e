"""Recombinator Networks (RCN), the SumNet baseline and the denoising keypoint model (DKM)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tracker.models.configs import VARIANTS, DKMConfig, NetConfig

__all__ = ["DKM", "RCN", "VARIANTS", "DKMConfig", "Fused", "NetConfig", "SumNet", "argmax_points",
           "build_model", "keypoint_maps", "to_map_coords"]


def conv_bn_relu(cin: int, cout: int, k: int = 3, dilation: int = 1) -> nn.Sequential:
    """Conv + BatchNorm + ReLU ("same" padding); BN folds into the conv at export."""
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Encoder(nn.Module):
    """Conv levels with 2x2 max-pooling between them; returns every level's pre-pool features."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        levels = []
        cin = cfg.in_channels
        for w in cfg.widths:
            layers = [conv_bn_relu(cin if i == 0 else w, w) for i in range(cfg.enc_convs)]
            levels.append(nn.Sequential(*layers))
            cin = w
        self.levels = nn.ModuleList(levels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, level in enumerate(self.levels):
            if i:
                x = F.max_pool2d(x, 2)
            x = level(x)
            feats.append(x)
        return feats


class RCN(nn.Module):
    """Recombinator Network: coarse-to-fine decoder that upsamples and concatenates."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        w = cfg.widths
        self.decoder = nn.ModuleList(
            nn.Sequential(conv_bn_relu(w[i] + w[i + 1], w[i], cfg.dec_kernel), conv_bn_relu(w[i], w[i], 1))
            for i in range(len(w) - 1)
        )
        self.head = nn.Conv2d(w[0], cfg.n_points, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        y = feats[-1]
        for i in range(len(feats) - 2, -1, -1):
            y = F.interpolate(y, scale_factor=2.0, mode="nearest")
            y = self.decoder[i](torch.cat([y, feats[i]], dim=1))
        return self.head(y)


class SumNet(nn.Module):
    """Baseline: every level predicts maps that are upsampled and summed with learnt weights."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.heads = nn.ModuleList(
            nn.Sequential(conv_bn_relu(w, w, cfg.dec_kernel), nn.Conv2d(w, cfg.n_points, 1))
            for w in cfg.widths
        )
        self.level_weights = nn.Parameter(torch.ones(len(cfg.widths)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        size = feats[0].shape[-2:]
        out = self.level_weights[0] * self.heads[0](feats[0])
        for i in range(1, len(feats)):
            maps = F.interpolate(self.heads[i](feats[i]), size=size, mode="bilinear",
                                 align_corners=False)
            out = out + self.level_weights[i] * maps
        return out


class DKM(nn.Module):
    """Denoising keypoint model: keypoint maps -> logits, dilated convs for a face-wide view."""

    def __init__(self, cfg: DKMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers = []
        cin = cfg.n_points
        for d in cfg.dilations:
            layers.append(conv_bn_relu(cin, cfg.width, 3, d))
            cin = cfg.width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(cfg.width, cfg.n_points, 1)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(maps))


def keypoint_maps(points: torch.Tensor, size: int, sigma: float,
                  visible: torch.Tensor | None = None) -> torch.Tensor:
    """Unnormalised Gaussian maps ``(N, K, size, size)`` for points ``(N, K, 2)`` in map pixels."""
    grid = torch.arange(size, dtype=points.dtype, device=points.device)
    dx = grid.view(1, 1, 1, size) - points[..., 0, None, None]
    dy = grid.view(1, 1, size, 1) - points[..., 1, None, None]
    maps = torch.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
    if visible is not None:
        maps = maps * visible[..., None, None].to(maps.dtype)
    return maps


def to_map_coords(points: torch.Tensor, from_size: int, to_size: int) -> torch.Tensor:
    """Rescale pixel-centre coordinates between map resolutions."""
    f = to_size / from_size
    return (points + 0.5) * f - 0.5


def argmax_points(logits: torch.Tensor) -> torch.Tensor:
    """Integer argmax location of each map as float ``(N, K, 2)`` (x, y)."""
    n, k, h, w = logits.shape
    idx = logits.reshape(n, k, h * w).argmax(dim=-1)
    return torch.stack([idx % w, idx // w], dim=-1).to(logits.dtype)


class Fused(nn.Module):
    """RCN + DKM: RCN points -> keypoint maps -> DKM; logits are summed (product of probabilities)."""

    def __init__(self, rcn: nn.Module, dkm: DKM) -> None:
        super().__init__()
        self.rcn = rcn
        self.dkm = dkm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.rcn(x)
        size = logits.shape[-1]
        m = self.dkm.cfg.map_size
        pts = to_map_coords(argmax_points(logits), size, m)
        prior = self.dkm(keypoint_maps(pts, m, self.dkm.cfg.sigma))
        prior = F.interpolate(prior, size=(size, size), mode="bilinear", align_corners=False)
        return logits + self.dkm.cfg.weight * prior


def build_model(name: str | NetConfig) -> nn.Module:
    """Build an RCN/SumNet variant by name (see ``VARIANTS``) or from a config."""
    cfg = VARIANTS[name] if isinstance(name, str) else name
    return RCN(cfg) if cfg.kind == "rcn" else SumNet(cfg)
