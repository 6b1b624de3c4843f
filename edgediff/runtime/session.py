"""onnxruntime sessions built from explicit settings, so the profile and the sampler use exactly the same ones.

Why each knob exists (REFERENCE.md, measured on this machine):
- opt level: ORT_ENABLE_ALL converts convs to the blocked NCHWc layout: faster, but it roughly doubles resident
  weights during load and adds reorder buffers; ORT_ENABLE_EXTENDED keeps plain NCHW.
- arena: the default CPU arena over-allocates and never returns memory. "capped" registers an *environment*
  allocator (a BFC arena growing by exactly what is asked, `arena_extend_strategy=1`) with `max_mem`, and the
  session uses it through `session.use_env_allocators=1`: activations beyond the cap raise a catchable error
  instead of the kernel's OOM killer ending the process. Weights do not live in that arena, only run-time tensors.
- memory pattern: pre-plans one block per run; with the arena it doubles activation memory from the second call.
- mmap threshold (glibc, process-wide): large frees go back to the kernel, so peaks do not creep over a long loop.
- threads: speed only; measured memory is the same at 1 and 2 threads and results do not depend on it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import onnxruntime as ort

from edgediff.errors import EdgediffError
from edgediff.runtime.rss import set_mmap_threshold
from edgediff.units import MIB

OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
ARENAS = ("capped", "off", "default")


@dataclass(frozen=True)
class SessionSettings:
    """Everything about a session that changes its memory or its speed."""

    opt_level: str = "extended"
    arena: str = "capped"  # capped env arena | off (plain malloc) | default (ORT's own arena, no cap possible)
    mem_pattern: bool = False
    mmap_threshold: int | None = 65536  # bytes; None leaves glibc's dynamic default alone
    threads: int = 1
    cap_mb: float | None = None  # max_mem of the capped arena; None = capped arena without a limit (profiling)
    # extra onnxruntime session config entries, (key, value) pairs: lets benchmarks/lean_loading.py measure levers
    # such as session.disable_prepacking through exactly this code path before any is adopted
    config: tuple = ()

    def __post_init__(self) -> None:
        if self.opt_level not in OPT_LEVELS:
            raise ValueError(f"opt_level must be one of {sorted(OPT_LEVELS)}, got {self.opt_level!r}")
        if self.arena not in ARENAS:
            raise ValueError(f"arena must be one of {ARENAS}, got {self.arena!r}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        object.__setattr__(self, "config", tuple((str(k), str(v)) for k, v in self.config))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SessionSettings":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def with_(self, **kw) -> "SessionSettings":
        return replace(self, **kw)


# The two configurations the planner chooses between; the profile measures both. Both pull the mmap lever: without
# it the RSS after loading depends on the process's allocation history (glibc raises its dynamic threshold after
# freeing large blocks, e.g. the 1 MiB chunks of checksumming): measured +15 MiB resident for "fast" at 256 px, so a
# profile taken in a fresh process would no longer predict the sampler.
MODES: dict[str, SessionSettings] = {
    "lean": SessionSettings(opt_level="extended", arena="capped", mem_pattern=False, mmap_threshold=65536),
    "fast": SessionSettings(opt_level="all", arena="capped", mem_pattern=True, mmap_threshold=65536),
}


def _register_capped_arena(cap_mb: float | None) -> None:
    """(Re-)register the process-wide CPU arena; sessions created afterwards use this one (checked: a later
    registration replaces the earlier one for new sessions, existing sessions keep theirs)."""
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    cap = 0 if cap_mb is None else max(4096, int(cap_mb * MIB))  # 0 = no limit
    chunk = 1 << 20 if cap == 0 else min(1 << 20, cap)  # the first region is taken whatever max_mem says
    cfg = {
        "max_mem": cap,
        "arena_extend_strategy": 1,  # kSameAsRequested: grow by what is asked, not by powers of two
        "initial_chunk_size_bytes": chunk,
        "initial_growth_chunk_size_bytes": chunk,
    }
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(cfg))


def session_options(settings: SessionSettings) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = OPT_LEVELS[settings.opt_level]
    so.intra_op_num_threads = settings.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_mem_pattern = settings.mem_pattern
    so.enable_cpu_mem_arena = settings.arena != "off"
    so.log_severity_level = 4  # our own one-line errors replace ORT's log spew (a cap hit is reported by us)
    if settings.arena == "capped":
        so.add_session_config_entry("session.use_env_allocators", "1")
    for key, value in settings.config:
        so.add_session_config_entry(key, value)
    return so


def create_session(model_path: str | Path, settings: SessionSettings) -> ort.InferenceSession:
    """A CPU session for `model_path` under `settings` (applies the process-wide levers first)."""
    if settings.mmap_threshold is not None:
        set_mmap_threshold(settings.mmap_threshold)
    if settings.arena == "capped":
        _register_capped_arena(settings.cap_mb)
    try:
        return ort.InferenceSession(str(model_path), session_options(settings), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise EdgediffError(f"onnxruntime cannot load {model_path}: {str(e).splitlines()[0][:200]}; re-export the bundle") from e


def is_cap_error(exc: BaseException) -> bool:
    """True when an onnxruntime run failed because the capped arena refused an allocation."""
    text = str(exc)
    return "bfc_arena" in text or "Available memory of" in text or "Failed to allocate memory" in text


def default_threads() -> int:
    """Cores this process may use (affinity-aware where the OS tells us)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
