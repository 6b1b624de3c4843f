"""Torch denoisers (training side only). `build_model(config)` is the single way a run creates its network."""

from __future__ import annotations

from edgediff.model_config import ModelConfig


def build_model(config: ModelConfig):
    """Instantiate the backbone named in `config` (imports torch lazily so the config stays importable)."""
    if config.backbone == "unet":
        from edgediff.models.unet import PatchUNet

        return PatchUNet(config)
    if config.backbone in ("dis", "dit"):
        from edgediff.models.token_net import PatchTokenNet

        return PatchTokenNet(config)
    raise ValueError(f"unknown backbone {config.backbone!r}: use unet, dis or dit")


def count_params(module) -> int:
    """Parameters of a torch module: the figure every manifest, log and benchmark row reports."""
    return int(sum(p.numel() for p in module.parameters()))


__all__ = ["ModelConfig", "build_model", "count_params"]
