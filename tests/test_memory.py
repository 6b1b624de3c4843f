"""Memory bank: snippet choice (numpy), PCA, user features, the run's bank file, and training with/without it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgediff.errors import EdgediffError
from edgediff import snippets as sn


def test_slerp_endpoints_midpoint_and_norm():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(16), rng.standard_normal(16)
    a, b = a / np.linalg.norm(a) * 4, b / np.linalg.norm(b) * 4
    assert np.allclose(sn.slerp(a, b, 0.0), a, atol=1e-5)
    assert np.allclose(sn.slerp(a, b, 1.0), b, atol=1e-5)
    mid = sn.slerp(a, b, 0.5)
    assert np.isclose(np.linalg.norm(mid), 4.0, atol=1e-4)  # stays on the sphere (a lerp would shrink)
    assert np.isclose(mid @ a, mid @ b, rtol=1e-4)  # equidistant from both ends
    assert np.linalg.norm((a + b) / 2) < 3.99


def test_choose_modes_and_errors():
    bank = np.arange(5 * 3, dtype=np.float32).reshape(5, 3) + 1
    r1 = sn.choose(bank, 8, seed=3)
    assert r1.shape == (8, 3) and np.array_equal(r1, sn.choose(bank, 8, seed=3))
    assert not np.array_equal(r1, sn.choose(bank, 8, seed=4))
    assert all(any(np.array_equal(row, e) for e in bank) for row in r1)
    assert np.array_equal(sn.choose(bank, 2, snippet=4), np.stack([bank[4]] * 2))
    assert np.allclose(sn.choose(bank, 1, interpolate_spec="0,1,0")[0], bank[0], atol=1e-5)
    with pytest.raises(EdgediffError, match="--snippet 5 is out of range"):
        sn.choose(bank, 1, snippet=5)
    with pytest.raises(EdgediffError, match="I,J,ALPHA"):
        sn.choose(bank, 1, interpolate_spec="1,2")
    with pytest.raises(EdgediffError, match="alpha"):
        sn.choose(bank, 1, interpolate_spec="1,2,1.5")
    with pytest.raises(EdgediffError, match="either"):
        sn.choose(bank, 1, snippet=0, interpolate_spec="1,2,0.5")


def test_random_entries_cover_the_bank_uniformly():
    bank = np.eye(4, dtype=np.float32)
    counts = sn.random_entries(bank, 4000, seed=0).argmax(axis=1)
    freq = np.bincount(counts, minlength=4) / 4000
    assert np.all(np.abs(freq - 0.25) < 0.03)


def test_snippets_module_never_imports_torch():
    code = "import sys; sys.modules['torch'] = None; import edgediff.snippets as s; print(s.choose([[1.0, 2.0]], 2).shape)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "(2, 2)" in out.stdout


def test_pca_is_deterministic_orthonormal_and_projects_to_the_sphere():
    from edgediff.memory_bank import fit_pca

    feats = np.random.default_rng(1).standard_normal((50, 20)).astype(np.float32)
    mean, comps, explained = fit_pca(feats, 8)
    mean2, comps2, _ = fit_pca(feats, 8)
    assert np.array_equal(comps, comps2) and np.array_equal(mean, mean2)
    assert np.allclose(comps @ comps.T, np.eye(8), atol=1e-5)
    assert 8 / 20 < explained < 1.0
    z = sn.project(feats, mean, comps)
    assert z.shape == (50, 8)
    assert np.allclose(np.linalg.norm(z, axis=1), np.sqrt(8), atol=1e-4)


def _tiny_folder(tmp_path, n=8, size=16):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{i:02d}.png")
    return folder


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEDIFF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _cfg(tmp_path, folder, **kw):
    from edgediff.train import TrainConfig

    base = dict(data=str(folder), out=str(tmp_path / "run"), image_size=16, grid=2, steps=3, batch_size=4,
                sample_every=0, checkpoint_every=3, model={"dim": 8, "mults": [1, 2], "snippet_dim": 8})
    base.update(kw)
    return TrainConfig(**base)


def test_user_features_bank_and_row_mismatch(tmp_path, cache):
    from edgediff.data import load_dataset
    from edgediff.memory_bank import bank_for_training

    folder = _tiny_folder(tmp_path)
    ds = load_dataset(str(folder), 16)
    feats = np.random.default_rng(2).standard_normal((8, 32)).astype(np.float32)
    np.save(tmp_path / "f.npy", feats)
    bank = bank_for_training(ds, _cfg(tmp_path, folder, features=str(tmp_path / "f.npy")))
    assert bank.own.shape == (8, 8) and bank.own.dtype == np.float32
    assert bank.dim == 8
    assert bank.info["encoder"] == "user" and bank.info["n"] == 8
    assert bank.info["pca_rank"] == 7  # 8 centred points span 7 dims: the 8th axis is zero padding
    assert np.allclose(bank.own[:, 7], 0)
    json.dumps(bank.info)
    np.save(tmp_path / "bad.npy", feats[:5])
    with pytest.raises(EdgediffError, match="5 rows but the dataset has 8 images"):
        bank_for_training(ds, _cfg(tmp_path, folder, features=str(tmp_path / "bad.npy")))
    with pytest.raises(EdgediffError, match="no such file"):
        bank_for_training(ds, _cfg(tmp_path, folder, features=str(tmp_path / "missing.npy")))


def test_train_writes_bank_and_eval_snippets_follow_it(tmp_path, cache):
    from edgediff.memory_bank import load_run_bank, load_run_bank_tensors, run_snippets
    from edgediff.train import train

    folder = _tiny_folder(tmp_path)
    np.save(tmp_path / "f.npy", np.random.default_rng(3).standard_normal((8, 32)).astype(np.float32))
    train(_cfg(tmp_path, folder, features=str(tmp_path / "f.npy")), progress=False)
    run = tmp_path / "run"
    bank = load_run_bank(run)
    assert bank.shape == (8, 8) and bank.dtype == np.float32
    t = load_run_bank_tensors(run)
    assert set(t) == {"snippets", "snippets_flipped", "pca_mean", "pca_components"}
    assert t["pca_components"].shape == (8, 32)
    assert np.array_equal(run_snippets(run, 3, snippet=2), np.stack([bank[2]] * 3))
    picked = run_snippets(run, 5, seed=1)
    assert all(any(np.array_equal(p, b) for b in bank) for p in picked)

    train(_cfg(tmp_path, folder, out=str(tmp_path / "plain"), memory=False), progress=False)
    assert load_run_bank(tmp_path / "plain") is None
    assert run_snippets(tmp_path / "plain", 3) is None
    with pytest.raises(EdgediffError, match="--no-memory"):
        run_snippets(tmp_path / "plain", 3, snippet=0)


def test_flipped_images_get_their_own_snippet_in_batches():
    """A mirrored example is conditioned on its mirror's snippet, an unmirrored one on its own: which image and
    which orientation each example is are read from its pixels (not from the batch's own flags), so swapping own
    and flipped, or ignoring the flip, or pairing a snippet with another image, fails here."""
    import torch

    from edgediff.batches import TrainBatches
    from edgediff.train import TrainConfig

    cfg = TrainConfig(image_size=8, grid=1, batch_size=64, snippet_dropout=0.0)
    data = torch.randn(4, 3, 8, 8)  # random images: none is its own mirror
    own = torch.randn(4, 2)
    flipped = torch.randn(4, 2)
    no_noise = torch.ones(1000)  # ᾱ = 1 at every t: x_t is the (mirrored or not) clean image itself
    batch = TrainBatches(cfg, 0, 64, data, own, flipped, no_noise, 2).get_batch(0)
    mirrored = []
    for patch, snippet in zip(batch.inputs.patch, batch.inputs.snippet):
        found = [(i, m) for i in range(4) for m in (False, True) if torch.equal(patch, data[i].flip(-1) if m else data[i])]
        assert len(found) == 1
        i, m = found[0]
        assert torch.equal(snippet, flipped[i] if m else own[i])
        mirrored.append(m)
    assert 10 < sum(mirrored) < 54  # both orientations drawn


@pytest.mark.slow
def test_encoder_onnx_matches_torch_and_bank_uses_it(tmp_path, cache):
    from edgediff import encoders

    imgs = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    f = encoders.encode(imgs)
    assert f.shape == (3, 1280) and f.dtype == np.float32
    ref = encoders.encode_torch(imgs)
    assert np.abs(f - ref).max() < 1e-3 * max(1.0, np.abs(ref).max())
    assert not np.allclose(f[0], f[1])


@pytest.mark.slow
def test_like_a_training_image_recovers_its_bank_entry(tmp_path, cache):
    """--like projects through the run's own encoder + PCA: a training image lands on its own snippet."""
    from PIL import Image

    from edgediff.data import load_dataset
    from edgediff.memory_bank import load_run_bank, run_snippets
    from edgediff.train import train

    folder = _tiny_folder(tmp_path)
    train(_cfg(tmp_path, folder, steps=1, checkpoint_every=1), progress=False)
    bank = load_run_bank(tmp_path / "run")
    ds = load_dataset(str(folder), 16)
    Image.fromarray(ds.images[5]).save(tmp_path / "like.png")
    z = run_snippets(tmp_path / "run", 2, like=tmp_path / "like.png", image_size=16)
    assert z.shape == (2, 8)
    assert np.abs(z[0] - bank[5]).max() < 1e-3
    assert int(np.argmax(bank @ z[0])) == 5


def test_reading_a_bank_needs_neither_torch_nor_the_training_loop():
    """memory.py used to import Snippets from train.py (a cycle that pulled torch into numpy-only bank reads)."""
    import subprocess
    import sys

    code = "import sys, edgediff.memory_bank; print('torch' in sys.modules, 'edgediff.train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
