"""`edgediff sample` once its options are parsed: the sampler's images written to a grid file and, as each pass
finishes, to a folder of single images. Library logic, not CLI: benchmarks call `sample_to_files` to measure the
command's own run, and it imports nothing beyond the device side (numpy, onnxruntime, pillow)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edgediff.errors import Interrupted
from edgediff.runtime.cascade import Start, start_sampler
from edgediff.runtime.sampler import SampleRequest, SampleResult


def sample_to_files(bundle_dir: str | Path | None, request: SampleRequest, out: Path | None,
                    out_dir: Path | None, log: Callable[[str], None] = print,
                    verbose: bool = False, start: Start = Start()) -> SampleResult:
    """Refuse outputs that could not be written before any work, sample with a progress bar (BundleSampler, or
    CascadeSampler when `start` names a base; both write nothing), writing each image into `out_dir` as its pass
    finishes (Ctrl-C keeps those), then the grid. An interrupt becomes `Interrupted` naming what was kept. Returns
    the SampleResult."""
    from edgediff import images as imgio
    from edgediff.progress import Progress

    _, run = start_sampler(bundle_dir, request, start, log=log, verbose=verbose)
    if out is not None:
        imgio.check_output_file(out, "--out")
    if out_dir is not None:
        imgio.check_output_dir(out_dir, "--out-dir")
    folder = imgio.FolderWriter(out_dir, request.seed, request.n) if out_dir is not None else None
    bar = Progress("sampling", request.n * request.steps)
    try:
        result = run(on_step=bar.step_callback(), on_images=folder.write if folder else None)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted while sampling: {folder.kept() if folder else 'no image written'}") from None
    finally:
        bar.close()
    if out is not None:
        try:
            imgio.save_image(imgio.make_grid(result.images), out)
        except KeyboardInterrupt:
            kept = f"; kept all {request.n} image(s) in {out_dir}" if folder else ""
            raise Interrupted(f"interrupted while writing the grid: {out} not written{kept}") from None
    return result
