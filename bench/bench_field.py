"""Field-of-view analysis benchmark: time per 2592x1944 field (decode, detection, every crop
classified, annotation), cells/s, and detection quality against ground truth.

    .venv/bin/python bench/bench_field.py              # prints Markdown tables
    .venv/bin/python bench/bench_field.py --write      # also updates docs/benchmarks.md

Fields: SYNTHETIC ALL-IDB1-layout fields from `trainer.synth` (blast centres as in `.xyc`,
plus every white cell's centre recorded from the generator). Real pixels: the 71 C-NMC 2019
cells in ../shared/data/cnmc-sample (Gupta & Gupta 2019, TCIA, doi 10.7937/tcia.2019.dc64i46r,
CC BY 3.0). Model: models/default (trained on synthetic data). Research use only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import Machine, add_write_args, exit_on_sigterm, report  # noqa: E402
from edge import imaging  # noqa: E402
from edge.analysis.crop import square_crop  # noqa: E402
from edge.analysis.detect import detect_cells  # noqa: E402
from edge.analysis.evaluate import Match, match_centres  # noqa: E402
from edge.analysis.field import analyze_field  # noqa: E402
from edge.config import AnalysisConfig  # noqa: E402
from edge.inference import Classifier  # noqa: E402
from tests.camera.fields import recording_white_cells  # noqa: E402

CNMC = REPO.parent / "shared" / "data" / "cnmc-sample"
MODEL = REPO / "models" / "default" / "model.xml"
SECTION = "field-analysis"
RADIUS = 40  # px: a detection matches an annotated centre this close (as in tests/camera)


def fields(n: int, seed: int) -> List[Dict]:
    """SYNTHETIC fields as JPEG q90 bytes (what `synth` writes) with both kinds of truth."""
    import trainer.synth as synth

    out = []
    with recording_white_cells() as placed:
        for i in range(n):
            img, blasts = synth.field(np.random.default_rng([seed, i]), i % 2 == 0)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            out.append({"jpg": buf.tobytes(), "blasts": blasts, "wbc": placed[-1]})
    return out


def ms(values: List[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f}"


def run(n: int, seed: int, reps: int) -> str:
    m = Machine(["openvino", "opencv-python-headless", "numpy"])
    cfg = AnalysisConfig()
    clf = Classifier(MODEL, ["CPU"])
    data = fields(n, seed)
    for _ in range(5):  # warm-up: first inferences allocate
        clf.predict(np.zeros((100, 100, 3), np.uint8))
    t_dec, t_det, t_cls, t_total, counts = [], [], [], [], []
    blasts, cells = Match(0, 0, 0), Match(0, 0, 0)
    for f in data:
        best = [float("inf")] * 4  # fastest of `reps` runs per step: the machine is shared
        for _ in range(reps):
            t0 = time.perf_counter()
            img = imaging.decode(f["jpg"])
            t1 = time.perf_counter()
            found = detect_cells(img, cfg)
            t2 = time.perf_counter()
            for c in found:
                clf.predict(square_crop(img, c.box, cfg.crop_margin))
            t3 = time.perf_counter()
            if found:
                analyze_field(img, clf, cfg)  # the analyzer as the daemon runs it (+ annotation)
            t4 = time.perf_counter()
            best = [min(b, t) for b, t in zip(best, (t1 - t0, t2 - t1, t3 - t2, t4 - t3))]
        for series, value in zip((t_dec, t_det, t_cls, t_total), best):
            series.append(value)
        counts.append(len(found))
        centres = [c.centre for c in found]
        blasts = blasts + match_centres(centres, f["blasts"], RADIUS)
        cells = cells + match_centres(centres, f["wbc"], RADIUS)
    total_cells = sum(counts)
    cells_per_s = total_cells / sum(t_cls) if sum(t_cls) else 0.0
    analyzer_cells_per_s = total_cells / sum(t_total) if sum(t_total) else 0.0

    cnmc = sorted(CNMC.glob("fold_*/*/*.bmp"))
    exact = {}  # size filter set for C-NMC's magnification, and the default
    for name, cnmc_cfg in (("60-440 px", AnalysisConfig(min_cell_diameter_px=60, max_cell_diameter_px=440)),
                           ("default 20-400 px", AnalysisConfig())):
        exact[name] = sum(1 for p in cnmc if len(detect_cells(cv2.imread(str(p)), cnmc_cfg)) == 1)

    return (
        "## Field analysis (`cells` mode)\n\n"
        "`bench/bench_field.py`: per field, each step timed separately and then the whole "
        "analyzer as the daemon runs it, in the same run.\n\n"
        f"{m.line()} Model: {clf.meta.name} {clf.meta.version} on {clf.device}. "
        f"{n} SYNTHETIC 2592x1944 fields from `trainer.synth` (seed {seed}), "
        f"{total_cells} white cells detected (median {statistics.median(counts):.0f} per field).\n\n"
        f"| step (per field: fastest of {reps} runs, median over fields) | ms |\n|---|---|\n"
        f"| decode JPEG 2592x1944 | {ms(t_dec)} |\n"
        f"| detect cells | {ms(t_det)} |\n"
        f"| crop + classify every cell | {ms(t_cls)} |\n"
        f"| whole `cells` analyzer (detect + classify + annotate) | {ms(t_total)} |\n\n"
        f"Classification: {cells_per_s:.0f} cells/s; whole analyzer: {analyzer_cells_per_s:.0f} "
        "cells/s.\n\n"
        f"| detection quality (match radius {RADIUS} px) | value |\n|---|---|\n"
        f"| blast recall vs `.xyc` centres | {blasts.recall:.3f} ({blasts.true_positives}/"
        f"{blasts.annotated}) |\n"
        f"| white-cell recall | {cells.recall:.3f} ({cells.true_positives}/{cells.annotated}) |\n"
        f"| white-cell precision | {cells.precision:.3f} ({cells.true_positives}/"
        f"{cells.detections}) |\n"
        + "".join(f"| real C-NMC cells with exactly one detection, size filter {name} | "
                  f"{k}/{len(cnmc)} |\n" for name, k in exact.items()) + "\n"
        "Synthetic fields measure the detector against known truth, not its accuracy on real "
        "smears; no real ALL-IDB1 field was available here.\n"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=20)
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--reps", type=int, default=3, help="timing runs per field (fastest counts)")
    add_write_args(ap)
    args = ap.parse_args()
    exit_on_sigterm()
    if not MODEL.is_file():
        print(f"{MODEL} is missing: make the demo model first", file=sys.stderr)
        return 2
    text = run(args.fields, args.seed, max(1, args.reps))
    report(SECTION, text, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
