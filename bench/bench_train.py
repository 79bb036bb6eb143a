"""Training throughput (images/s) of the trainer on this machine, on SYNTHETIC ALL-IDB2 cells.

Two figures per architecture: the full input pipeline the trainer uses (decode cache + on-the-fly
augmentation + edge.preprocess + tf.data) and model.fit on tensors already in memory (the model's
own cost). The first epoch (graph tracing) is excluded; the median of the others is reported.

    .venv/bin/python bench/bench_train.py [--n 160] [--epochs 3] [--batch-size 16] [--arch paper cnmc2x2] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import Machine, add_write_args, exit_on_sigterm, report  # noqa: E402

SECTION = "training"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=160, help="synthetic training images")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per measurement (first is warm-up)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--arch", nargs="+", default=["paper", "cnmc2x2"])
    add_write_args(ap)
    args = ap.parse_args()
    exit_on_sigterm()
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (the first is warm-up)")
    m = Machine(["tensorflow", "keras", "numpy", "opencv-python-headless"])

    from trainer.env import environment, setup_tensorflow

    setup_tensorflow(seed=0, deterministic=False)
    import keras
    import numpy as np

    from trainer.datasets import load
    from trainer.models import build
    from trainer.pipeline import PAPER_INPUT, ImageStore, arrays, one_hot, train_dataset
    from trainer.synth import generate

    class Timer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t0)

    env = environment()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(data, "all-idb2", args.n, seed=0)
        ds = load(data, "all-idb2")
        paths = [s.path for s in ds.samples]
        labels = np.array([s.label for s in ds.samples])
        store = ImageStore(data, PAPER_INPUT)
        x = arrays(store, paths)  # also warms the decode cache, as after the trainer's first epoch
        y = one_hot(labels)
        for arch in args.arch:
            for mode in ("pipeline+augment", "in-memory tensors"):
                model = build(arch, (100, 100, 3))
                timer = Timer()
                if mode == "pipeline+augment":
                    feed = train_dataset(store, paths, labels, args.batch_size, seed=0, augment=True)
                    model.fit(feed, epochs=args.epochs, verbose=0, callbacks=[timer])
                else:
                    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0, callbacks=[timer])
                med = statistics.median(timer.times[1:])
                rows.append((arch, mode, model.count_params(), args.n / med))

    text = "\n".join([
        "## Training (trainer, TensorFlow)", "",
        "`bench/bench_train.py`: training throughput on SYNTHETIC ALL-IDB2 cells (100x100x3 input), "
        "per architecture the trainer's full input pipeline (decode cache + on-the-fly augmentation "
        "+ `edge.preprocess` + tf.data) next to `model.fit` on tensors already in memory (the "
        "model's own cost), in the same run. The first epoch (graph tracing) is excluded.", "",
        f"{m.line()} oneDNN enabled={env['onednn'].get('enabled')}, GPUs {env['gpus'] or 'none'}.", "",
        f"n={args.n} images, batch {args.batch_size}, median of epochs 2..{args.epochs}.", "",
        "| arch | feed | params | images/s |", "|---|---|---:|---:|",
        *[f"| {arch} | {mode} | {params:,} | {ips:.1f} |" for arch, mode, params, ips in rows],
        "",
    ])
    report(SECTION, text, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
