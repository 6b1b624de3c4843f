"""Every setting of a training run as one typed record: what `edgediff train` builds from its flags, run.json
and each checkpoint record, and what resume, export and the benchmarks rebuild a run from.

Its own module (torch-free) so that reading a run's settings needs neither torch nor the training loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from edgediff.errors import EdgediffError
from edgediff.cells import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from edgediff.model_config import ModelConfig

PRECISIONS = ("auto", "bf16", "fp32")  # edgediff.precision reads them from here (this module is torch-free)

# The ModelConfig fields TrainConfig sets itself (the geometry and the backbone: flags of their own, checked by
# validate()) or that the data fixes (channels); `TrainConfig.model` may set every other one.
OWNED_MODEL_FIELDS = frozenset({"image_size", "grid", "halo", "backbone", "channels"})
MODEL_OVERRIDES = tuple(f.name for f in fields(ModelConfig) if f.name not in OWNED_MODEL_FIELDS)


@dataclass
class TrainConfig:
    """Every setting of a run; saved to run.json so a run can be resumed, audited and rebuilt."""

    data: str = "emoji"
    out: str = "runs/default"
    image_size: int = 32
    grid: int = 2
    halo: int = 0  # pixels of neighbouring cells each cell sees (edgediff.cells)
    backbone: str = "unet"
    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    warmup_steps: int = 100  # fixed, not a fraction of --steps, so a resumed run keeps the same LR schedule
    seed: int = 0
    memory: bool = True
    snippet_dropout: float = 0.2  # probability of the whole-vector null snippet (what guidance contrasts with)
    # "pca": snippets are PCA-reduced to snippet_dim (the default). "gmem": GMem's own recipe — the full
    # L2-normalised encoder feature, and element-wise dropout (snippet_element_dropout, rescaled like nn.Dropout)
    # on top of the whole-vector null.
    snippet_mode: str = "pca"
    snippet_element_dropout: float = 0.4  # GMem's value; used only with snippet_mode "gmem"
    # Representation alignment (REPA): weight of the negative-cosine loss between a projection of an early UNet
    # feature map and the frozen encoder's spatial map of the clean image (0 = off); it stops after align_until
    # steps (0 = never). See edgediff/align.py.
    align: float = 0.0
    align_until: int = 0
    features: str | None = None  # optional user-supplied .npy features instead of the built-in encoder
    sample_every: int = 500
    checkpoint_every: int = 100
    device: str = "auto"
    precision: str = "auto"  # forward-pass arithmetic (edgediff.precision): auto = bf16 on CUDA, float32 on a CPU
    model: dict = field(default_factory=dict)  # ModelConfig overrides: keys of MODEL_OVERRIDES (dim, mults, ...)
    init_from: str | None = None  # bundle or run whose weights start a fresh run (edgediff.warmstart)
    # settings changed by `--resume --override NAME`: [{"step", "flag", "was", "now"}] (edgediff.resume)
    overrides: list = field(default_factory=list)

    @classmethod
    def from_dict(cls, recorded: dict) -> "TrainConfig":
        """The settings a run.json or checkpoint records (its "train" object); keys this version does not know are
        dropped, keys an older record lacks take their defaults (that run was trained with them)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in recorded.items() if k in known})

    def model_config(self, snippet_dim: int = 64) -> ModelConfig:
        base = ModelConfig(image_size=self.image_size, grid=self.grid, backbone=self.backbone, snippet_dim=snippet_dim,
                           halo=self.halo)
        # a GMem-mode bank fixes the snippet width (the encoder's feature dim): a snippet_dim override cannot apply
        fixed = {"snippet_dim": snippet_dim} if self.snippet_mode == "gmem" and self.memory else {}
        return ModelConfig.from_dict({**base.to_dict(), **self.model, **fixed})

    def command(self, steps: int | None = None) -> str:
        """The `edgediff train` line that rebuilds this run (recorded in bundles so anyone can retrain a model)."""
        d = ModelConfig()  # the widths' one home: what --dim / --mults / --depth default to
        m = {"dim": d.dim, "mults": list(d.mults), "depth": d.depth, **self.model}
        parts = [
            "edgediff train", f"--data {self.data}", f"--image-size {self.image_size}", f"--grid {self.grid}",
            *([f"--halo {self.halo}"] if self.halo else []),
            f"--backbone {self.backbone}", f"--dim {m['dim']}", f"--mults {','.join(str(x) for x in m['mults'])}",
            f"--steps {steps if steps is not None else self.steps}", f"--batch-size {self.batch_size}",
            f"--lr {self.lr:g}", f"--seed {self.seed}", f"--ema-decay {self.ema_decay:g}",
            f"--snippet-dropout {self.snippet_dropout:g}",
        ]
        if self.backbone != "unet":
            parts.append(f"--depth {m['depth']}")
        if m.get("position_map"):
            parts.append("--position-map")
        if m.get("schedule_shift", 1.0) != 1.0:
            parts.append(f"--schedule-shift {m['schedule_shift']:g}")
        if not self.memory:
            parts.append("--no-memory")
        if self.features:
            parts.append(f"--features {self.features}")
        if self.snippet_mode != "pca":
            parts.append(f"--snippet-mode {self.snippet_mode} --snippet-element-dropout {self.snippet_element_dropout:g}")
        if self.align:
            parts.append(f"--align {self.align:g} --align-until {self.align_until}")
        if self.init_from:
            parts.append(f"--init-from {self.init_from}")
        if self.precision != "auto":
            parts.append(f"--precision {self.precision}")
        line = " ".join(parts + [f"--out {self.out}"])
        # an override is not a flag of the first command: say where each one took effect
        return line + "".join(f"; resumed at step {o['step']} with {o['flag']} {o['now']} --override "
                              f"{o['flag'][2:]}" for o in self.overrides)

    def validate(self) -> None:
        checks = [
            (self.steps >= 1, f"--steps {self.steps} must be >= 1"),
            (self.batch_size >= 1, f"--batch-size {self.batch_size} must be >= 1"),
            (MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE,
             f"--image-size {self.image_size} must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE}"),
            (self.grid >= 1, f"--grid {self.grid} must be >= 1"),
            (self.grid >= 1 and self.image_size % self.grid == 0,
             f"--grid {self.grid} does not divide --image-size {self.image_size}: pick a divisor"),
            (self.grid < 1 or self.image_size < 1 or 0 <= self.halo <= self.image_size // self.grid,
             f"--halo {self.halo} must be between 0 and the cell side {self.image_size // max(1, self.grid)}"),
            (self.lr > 0 and math.isfinite(self.lr), f"--lr {self.lr} must be a finite number > 0"),
            (self.seed >= 0, f"--seed {self.seed} must be >= 0"),
            (0.0 <= self.ema_decay < 1.0, f"--ema-decay {self.ema_decay} must be in [0, 1)"),
            (0.0 <= self.snippet_dropout <= 1.0, f"--snippet-dropout {self.snippet_dropout} must be in [0, 1]"),
            (self.snippet_mode in ("pca", "gmem"), f"--snippet-mode {self.snippet_mode}: use pca or gmem"),
            (0.0 <= self.snippet_element_dropout < 1.0,
             f"--snippet-element-dropout {self.snippet_element_dropout} must be in [0, 1)"),
            (self.align >= 0 and math.isfinite(self.align), f"--align {self.align} must be a finite weight >= 0"),
            (self.align_until >= 0, f"--align-until {self.align_until} must be >= 0 (0: align for the whole run)"),
            (not self.align or self.backbone == "unet",
             f"--align needs the unet backbone (it reads an early UNet feature map), not {self.backbone}"),
            (self.checkpoint_every >= 1, f"--checkpoint-every {self.checkpoint_every} must be >= 1"),
            (self.sample_every >= 0, f"--sample-every {self.sample_every} must be >= 0 (0 disables previews)"),
            (self.backbone in ("unet", "dis", "dit"), f"--backbone {self.backbone}: use unet, dis or dit"),
            (self.device in ("auto", "cpu", "cuda"), f"--device {self.device}: use auto, cpu or cuda"),
            (self.precision in PRECISIONS, f"--precision {self.precision}: use {', '.join(PRECISIONS)}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise EdgediffError(msg)
        self._validate_model()

    def _validate_model(self) -> None:
        """`model` names only ModelConfig fields it may set, each of its default's type: a misspelt key (`dims`)
        was once merged late and silently dropped, training the default widths under a name that said otherwise."""
        types = {f.name: type(f.default) for f in fields(ModelConfig) if f.name in MODEL_OVERRIDES}
        for key, value in self.model.items():
            if key not in types:
                raise EdgediffError(f"model setting {key!r} is not one a run may set; use {', '.join(types)}")
            if not _of_type(value, types[key]):
                want = "a list of integers" if types[key] is tuple else types[key].__name__
                raise EdgediffError(f"model setting {key} = {value!r} must be {want}")


def _of_type(value: object, kind: type) -> bool:
    """`value` fits a ModelConfig field whose default is of `kind`: a tuple field takes a list or tuple of ints (JSON
    has no tuples), an int field an int that is not a bool."""
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    if kind is tuple:
        return isinstance(value, (list, tuple)) and all(is_int(v) for v in value)
    return is_int(value) if kind is int else isinstance(value, kind)
