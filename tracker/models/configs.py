"""Network shapes (torch-free): the RCN/SumNet and DKM configs saved with every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from tracker.face68 import N_POINTS


@dataclass(frozen=True)
class NetConfig:
    """Encoder/decoder shape; ``widths`` run from the finest level to the coarsest."""

    kind: str = "rcn"  # "rcn" or "sumnet"
    size: int = 64
    in_channels: int = 1
    widths: tuple[int, ...] = (16, 32, 48, 64, 64)
    enc_convs: int = 2
    dec_kernel: int = 3
    n_points: int = N_POINTS


@dataclass(frozen=True)
class DKMConfig:
    """Denoising keypoint model over low-resolution keypoint maps."""

    map_size: int = 16
    width: int = 64
    dilations: tuple[int, ...] = (1, 2, 4, 8, 1)
    sigma: float = 1.0
    n_points: int = N_POINTS
    weight: float = 1.0  # scale of the DKM logits when summed with RCN's


VARIANTS: dict[str, NetConfig] = {
    # the paper's configuration: 80x80, 5 levels of 64 channels, 5x5 + 1x1 decoder convs
    "rcn": NetConfig("rcn", 80, 1, (64, 64, 64, 64, 64), 2, 5),
    "sumnet": NetConfig("sumnet", 80, 1, (64, 64, 64, 64, 64), 2, 5),
    # CPU real-time: thin fine levels, 3x3 decoder
    "rcn_lite": NetConfig("rcn", 64, 1, (16, 32, 48, 64, 64), 2, 3),
    "sumnet_lite": NetConfig("sumnet", 64, 1, (16, 32, 48, 64, 64), 2, 3),
    # lite with wider coarse levels (2x params, ~+0.2 ms on the CPU)
    "rcn_lite_wide": NetConfig("rcn", 64, 1, (16, 32, 48, 96, 128), 2, 3),
    # wide coarse levels and a 24-channel finest level (~+0.3 ms on the CPU)
    "rcn_lite_fine": NetConfig("rcn", 64, 1, (24, 32, 48, 96, 128), 2, 3),
    # lite at the paper's 80x80 input (~1.5x the CPU time of rcn_lite)
    "rcn_lite80": NetConfig("rcn", 80, 1, (16, 32, 48, 64, 64), 2, 3),
    # rcn_lite80 with wider coarse levels (4x params, ~1.17x its CPU time)
    "rcn_lite80_wide": NetConfig("rcn", 80, 1, (16, 32, 64, 128, 192), 2, 3),
}


def _tuples(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def net_config(d: dict) -> NetConfig:
    """A NetConfig from its saved dict (lists become tuples)."""
    return NetConfig(**_tuples(d))


def dkm_config(d: dict | None) -> DKMConfig | None:
    """A DKMConfig from its saved dict, or None."""
    return DKMConfig(**_tuples(d)) if d else None
