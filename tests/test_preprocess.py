"""The one preprocessing definition: colour order, scale, layout and size follow model.json."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edge.model_meta import InputSpec, ModelMeta
from edge.preprocess import to_hwc, to_tensor


def _bgr(h: int = 50, w: int = 60) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 10   # B
    img[..., 1] = 100  # G
    img[..., 2] = 250  # R
    return img


def test_rgb_scaled_nhwc() -> None:
    spec = InputSpec(shape=[1, 32, 32, 3])
    x = to_tensor(_bgr(), spec)
    assert x.shape == (1, 32, 32, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 5, 5], [250 / 255, 100 / 255, 10 / 255], rtol=1e-6)


def test_bgr_mean_nchw() -> None:
    spec = InputSpec(shape=[1, 3, 16, 20], layout="NCHW", color_order="BGR",
                     mean=[127.5, 127.5, 127.5], scale=1 / 127.5)
    x = to_tensor(_bgr(), spec)
    assert x.shape == (1, 3, 16, 20)
    np.testing.assert_allclose(x[0, :, 3, 3], [(10 - 127.5) / 127.5, (100 - 127.5) / 127.5,
                                                (250 - 127.5) / 127.5], rtol=1e-6)


def test_hwc_for_training_equals_tensor_for_inference() -> None:
    spec = InputSpec(shape=[1, 24, 24, 3])
    img = np.random.default_rng(1).integers(0, 255, (80, 90, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_hwc(img, spec)[None], to_tensor(img, spec))


@pytest.mark.parametrize("shape", [[None, 100, 100, 3], [2, 100, 100, 3], [1, 100, 100], [1, 100, 100, 1]])
def test_dynamic_batched_or_non_rgb_shapes_are_refused(shape) -> None:
    with pytest.raises(ValidationError):
        InputSpec(shape=shape)


def test_meta_positive_label_must_be_a_label() -> None:
    with pytest.raises(ValidationError):
        ModelMeta(name="m", version="1", created="now", labels=["a", "b"], positive_label="ALL",
                  input=InputSpec(shape=[1, 8, 8, 3]), synthetic=True)
    meta = ModelMeta(name="m", version="1", created="now", labels=["normal", "ALL"],
                     positive_label="ALL", input=InputSpec(shape=[1, 8, 8, 3]), synthetic=True)
    assert meta.positive_index == 1 and "Research use only" in meta.disclaimer
