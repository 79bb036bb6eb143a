"""Architectures: the paper CNN (Thanh et al. 2017, reference.md §1) and the C-NMC "2x2" CNN."""

from __future__ import annotations

from typing import Sequence

ARCHS = ("paper", "cnmc2x2")


def build(arch: str, input_hwc: Sequence[int], n_classes: int = 2, lr: float = 1e-4, lr_decay: float = 1e-6):
    """A compiled Keras model whose output is softmax probabilities in LABELS order.

    `lr_decay` is Keras 2's Adam `decay` (the paper's 1e-6), which Keras 3 removed:
    lr / (1 + lr_decay * step), rebuilt here as the equivalent InverseTimeDecay schedule."""
    import keras
    from keras import layers as L

    inp = keras.Input(tuple(input_hwc), name="image")
    if arch == "paper":
        x = L.ZeroPadding2D(2)(inp)
        x = L.Conv2D(30, 5, activation="relu")(x)
        x = L.ZeroPadding2D(2)(x)
        x = L.Conv2D(30, 5, activation="relu")(x)
        x = L.MaxPooling2D(2, strides=2)(x)
    elif arch == "cnmc2x2":
        x = inp
        for filters in (32, 64):  # two blocks of two convolutions, then one dense layer
            x = L.Conv2D(filters, 3, padding="same", activation="relu")(x)
            x = L.Conv2D(filters, 3, padding="same", activation="relu")(x)
            x = L.MaxPooling2D(2)(x)
            x = L.Dropout(0.25)(x)
    else:
        raise ValueError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHS)}")
    x = L.Flatten()(x)
    x = L.Dense(n_classes)(x)
    out = L.Softmax(name="probabilities")(x)
    model = keras.Model(inp, out, name=f"all_{arch}")
    rate = keras.optimizers.schedules.InverseTimeDecay(lr, decay_steps=1, decay_rate=lr_decay) if lr_decay else lr
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=rate), loss="categorical_crossentropy",
                  metrics=["accuracy", keras.metrics.AUC(name="auc")])
    return model
