"""`train --data FOLDER` names the image files it could not read (the first few, then "and N more"), on the first
load and on a cached one alike: "skipped 1 unreadable image file(s)" alone left a user hunting for it (issue 24).
"""

from __future__ import annotations

import numpy as np

from edgediff.data import cache_dir, load_dataset

from conftest import tiny_model, write_images


def _broken(folder, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"not an image")


def test_skipped_files_are_named_on_a_fresh_and_a_cached_load(tmp_path):
    data = write_images(tmp_path / "images", n=4, size=16)
    (data / "sub").mkdir()
    _broken(data, "a_broken.png", "sub/b_broken.jpg")
    first = load_dataset(str(data), 16)
    again = load_dataset(str(data), 16)  # from the .npz cache: the names must survive it
    assert len(first) == 4 and first.skipped == 2
    assert first.skipped_names == again.skipped_names == ("a_broken.png", "sub/b_broken.jpg")
    assert again.skipped_text() == "a_broken.png, sub/b_broken.jpg"


def test_many_skipped_files_are_cut_short_with_a_count(tmp_path):
    data = write_images(tmp_path / "images", n=2, size=16)
    _broken(data, *[f"bad_{i}.png" for i in range(7)])
    ds = load_dataset(str(data), 16)
    assert ds.skipped_text() == "bad_0.png, bad_1.png, bad_2.png and 4 more"


def test_a_cache_written_before_names_were_recorded_is_read_again(tmp_path):
    data = write_images(tmp_path / "images", n=2, size=16)
    _broken(data, "broken.png")
    ds = load_dataset(str(data), 16)
    (cache := cache_dir() / f"{ds.key}.npz").unlink()
    np.savez(cache, images=ds.images, skipped=np.int64(1))  # the old cache layout: a count only
    assert load_dataset(str(data), 16).skipped_names == ("broken.png",)


def test_the_training_log_names_the_skipped_file(tmp_path):
    from edgediff.train import TrainConfig, train

    data = write_images(tmp_path / "images", n=8, size=16)
    _broken(data, "broken.png")
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), image_size=16, grid=2, steps=1, batch_size=4,
                      memory=False, sample_every=0, checkpoint_every=1, model=tiny_model(), device="cpu")
    lines: list[str] = []
    train(cfg, progress=False, log=lines.append)
    assert any("skipped 1 unreadable image file(s)" in line and "(broken.png)" in line for line in lines), lines
