"""The architectures against the paper's published figures (reference.md §1)."""

from __future__ import annotations

import pytest

from trainer.models import build


def test_paper_cnn_has_the_papers_parameter_count() -> None:
    model = build("paper", (100, 100, 3))
    assert model.count_params() == 174_812
    assert model.output_shape == (None, 2)


@pytest.mark.parametrize("decay", [1e-6, 1e-2])
def test_adam_decay_is_keras2_inverse_time(decay: float) -> None:
    """Keras 2's Adam(decay=d) used lr / (1 + d * iterations); Keras 3 dropped the argument."""
    opt = build("paper", (100, 100, 3), lr=1e-4, lr_decay=decay).optimizer
    for step in (0, 1, 1000, 50_000):
        assert float(opt.learning_rate) == pytest.approx(1e-4 / (1 + decay * float(opt.iterations)), rel=1e-6)
        opt.iterations.assign(step)
    assert float(opt.learning_rate) == pytest.approx(1e-4 / (1 + decay * 50_000), rel=1e-6)


def test_decay_zero_is_a_constant_rate() -> None:
    opt = build("cnmc2x2", (64, 64, 3), lr=3e-4, lr_decay=0.0).optimizer
    opt.iterations.assign(10_000)
    assert float(opt.learning_rate) == pytest.approx(3e-4)
