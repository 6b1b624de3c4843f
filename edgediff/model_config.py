"""Model hyper-parameters and the named presets as plain data: stored in checkpoints and manifests as JSON. Torch-free
(outside `edgediff/models/`), so the device side reads a manifest's model_config without importing any network code."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from edgediff.cells import HasCellGeometry, patch_size
from edgediff.schedule import SHIFT_RANGE, Schedule


@dataclass(frozen=True)
class ModelConfig(HasCellGeometry):
    """Everything needed to rebuild a denoiser's architecture. Frozen: a checkpoint and a bundle manifest
    (`Manifest.model_config`) each hold one, and nothing may change it behind the weights it describes.

    The network sees `patch` (C×p×p), `global_content` (C×p×p), `timestep`, `position` (one-hot, grid²) and
    `snippet` (memory-bank vector; zeros = null condition). grid = 1 is the full-image baseline. With `halo` m > 0
    the spatial inputs are the cell plus m pixels of its neighbours (edgediff.cells), the output the cell only.
    """

    image_size: int = 32
    channels: int = 3
    grid: int = 2
    backbone: str = "unet"
    dim: int = 64
    mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    snippet_dim: int = 64
    halo: int = 0  # pixels of the neighbouring cells' x_t the network sees around its cell (0: the cell alone)
    # UNet only: the one-hot position also drawn as a "you are here" channel on the global content
    # (edgediff.models.layers.position_map_torch). Why: the condition vector shifts every pixel alike, so without
    # it a cell cannot tell which part of the global content is its own; at 8 × 8 cells that is most of the layout.
    position_map: bool = False
    # The noise schedule's resolution shift (edgediff.schedule.shift_snr) the network was trained with: part of the
    # model, since its timestep means a noise level only under this schedule. 1: the plain cosine.
    schedule_shift: float = 1.0
    # DiS / DiT-only settings (ignored by the UNet)
    token_patch: int = 2
    depth: int = 6
    d_state: int = 16
    # Mixer constants, recorded so a checkpoint rebuilds exactly (older checkpoints lack them and get these,
    # which are the values they were trained with).
    ssm_expand: int = 2  # inner width of the SSM mixer = ssm_expand · dim
    ssm_headdim: int = 64  # SSM head width (one head when it does not divide the inner width)
    ssm_conv: int = 4  # kernel of each scan direction's causal depthwise conv
    ssm_chunk: int = 16  # SSD chunk length: cost is linear in tokens for any fixed chunk
    attn_headdim: int = 32  # attention head width of the dit twin
    # Read by nothing, but every manifest and checkpoint on disk carries it: kept so that a manifest read and
    # written back is the same bytes (tests/test_bundle.py), the format older edgediff versions read.
    extra: dict = field(default_factory=dict)

    @property
    def patch_size(self) -> int:
        return patch_size(self.image_size, self.grid)

    @property
    def input_side(self) -> int:
        return self.geometry.side

    @property
    def patch_channels(self) -> int:
        return self.geometry.patch_channels

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mults"] = list(self.mults)
        for name, off in (("position_map", False), ("schedule_shift", 1.0)):
            if d[name] == off:  # written only when on: every model made before it keeps its records byte for byte
                del d[name]
        return d

    @property
    def schedule(self) -> Schedule:
        """The noise schedule this network was trained with (and must be sampled and exported with)."""
        return Schedule(shift=float(self.schedule_shift))

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """The config a checkpoint or manifest records; keys this version does not know (a newer field) are
        dropped and keys it lacks (an older record) take their defaults."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if "mults" in kw:
            kw["mults"] = tuple(kw["mults"])
        return cls(**kw)


# Named model sizes, as DiT keeps its DiT_models table: what `edgediff train --preset NAME` starts from (an explicit
# --backbone, --dim, --mults or --depth wins over the preset's). The image geometry (size, grid, halo) and the
# snippet stay separate flags: a size is a network, not a dataset.
PRESETS: dict[str, dict] = {
    "unet-s": {"backbone": "unet", "dim": 32, "mults": (1, 2, 2)},  # the memory ablation's arms (benchmarks)
    "unet-m": {"backbone": "unet", "dim": 40, "mults": (1, 2, 2)},  # the shipped default bundle
    "unet-l": {"backbone": "unet", "dim": 64, "mults": (1, 2, 2)},  # ModelConfig's own defaults
    "dis-s": {"backbone": "dis", "dim": 64, "depth": 6},  # state-space backbone (docs/dis.md)
    "dit-s": {"backbone": "dit", "dim": 64, "depth": 6},  # its attention twin
    # A recipe: a network plus the image geometry it was chosen for (flags still win). 128 px in 8×8 cells of 16 px
    # with a 4 px halo: each input is 24 px, so a step costs what a 32 px 2×2 step costs (docs/scale.md).
    "emoji-128": {"backbone": "unet", "dim": 40, "mults": (1, 2, 2), "image_size": 128, "grid": 8, "halo": 4},
}
DEFAULT_IMAGE_SIZE, DEFAULT_GRID = 32, 2
DEFAULT_HALO = 4  # what every shipped model uses: a cell sees 4 px of its neighbours (0 shows the grid as seams)


def preset(name: str) -> dict:
    """The ModelConfig fields of preset `name`; an unknown name is a one-line error listing the known ones."""
    from edgediff.errors import EdgediffError

    if name not in PRESETS:
        raise EdgediffError(f"--preset {name!r} is not a model preset; use one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def geometry_choice(preset_name: str | None, image_size: int | None, grid: int | None,
                    halo: int | None) -> tuple[int, int, int]:
    """(image size, grid, halo) as `edgediff train` resolves them: each flag given, else the preset's, else the
    defaults. The default halo is DEFAULT_HALO for a grid of cells (capped at the cell side) and 0 for a full-image
    model, which has no neighbours to see."""
    chosen = preset(preset_name) if preset_name is not None else {}
    size = image_size if image_size is not None else chosen.get("image_size", DEFAULT_IMAGE_SIZE)
    cells = grid if grid is not None else chosen.get("grid", DEFAULT_GRID)
    if halo is None:
        halo = chosen.get("halo", 0 if cells <= 1 else min(DEFAULT_HALO, size // max(1, cells)))
    return size, cells, halo


def _parse_mults(mults: str) -> tuple[int, ...]:
    try:
        return tuple(int(m) for m in mults.split(",") if m.strip())
    except ValueError:
        from edgediff.errors import EdgediffError

        raise EdgediffError(f"--mults {mults!r} must be comma-separated integers, e.g. 1,2,2") from None


def model_choice(preset_name: str | None, backbone: str | None, dim: int | None, mults: str | None,
                 depth: int | None, position_map: bool | None = None,
                 schedule_shift: float | None = None) -> tuple[str, dict]:
    """(backbone, TrainConfig.model) as `edgediff train` resolves them: ModelConfig's defaults, then the preset,
    then each flag given; widths no network can have are refused in one line."""
    from edgediff.errors import EdgediffError

    base = {"backbone": ModelConfig.backbone, "dim": ModelConfig.dim, "mults": ModelConfig.mults,
            "depth": ModelConfig.depth, "position_map": ModelConfig.position_map,
            "schedule_shift": ModelConfig.schedule_shift}
    if preset_name is not None:
        base.update({k: v for k, v in preset(preset_name).items() if k in base})
    dim = base["dim"] if dim is None else dim
    mult_tuple = base["mults"] if mults is None else _parse_mults(mults)
    if dim < 1 or not mult_tuple or min(mult_tuple) < 1:
        raise EdgediffError("--dim and --mults must be positive integers")
    widths = {"dim": dim, "mults": list(mult_tuple), "depth": base["depth"] if depth is None else depth}
    if base["position_map"] if position_map is None else position_map:
        widths["position_map"] = True  # recorded only when on, so runs without it keep their run.json as it was
    shift = base["schedule_shift"] if schedule_shift is None else schedule_shift
    low, high = SHIFT_RANGE
    if not low <= shift <= high:
        raise EdgediffError(f"--schedule-shift {shift} is outside {low:g}..{high:g}; use the image side ÷ 32 "
                            "(4 at 128 px)")
    if shift != 1.0:
        widths["schedule_shift"] = float(shift)  # likewise recorded only when shifted
    return backbone or base["backbone"], widths
