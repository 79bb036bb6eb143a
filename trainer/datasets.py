"""Loaders for ALL-IDB1, ALL-IDB2, C-NMC and class folders, with validation up front.

A loader turns a directory into `Sample`s (path relative to the root, label, subject) and
refuses, with a message that says what to fix, anything it cannot use: a missing or empty
directory, files whose names do not follow the layout, files that do not decode, one class only.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from edge import imaging
from trainer import LABELS, TrainerError

FORMATS = ("auto", "all-idb1", "all-idb2", "cnmc", "folders")
IDB_RE = re.compile(r"^Im(\d+)_([01])\.(jpe?g|tiff?)$", re.IGNORECASE)
CNMC_RE = re.compile(r"^UID_([^_]+)_(\d+)_(\d+)_(all|hem)\.bmp$", re.IGNORECASE)
POSITIVE_DIRS = {"all", "blast", "blasts", "positive", "1"}
NEGATIVE_DIRS = {"normal", "hem", "healthy", "negative", "0"}
# C-NMC 2019 ships byte-identical images under different subject ids (cnmc-sample/README.md):
# such subjects are one patient. Identical bytes are also merged by hash (see `groups`).
CNMC_ALIASES = [{"20", "21"}, {"51", "75", "78"}, {"H2", "H4", "H5", "H6", "H10", "h3"}]
SHOW = 5  # example file names in error messages
SYNTHETIC_MARKERS = {"synthetic.txt", "synthetic.json"}  # what `synth` writes beside its images
log = logging.getLogger("trainer")


@dataclass(frozen=True)
class Sample:
    path: str  # POSIX path relative to the data root
    label: int  # index into LABELS
    subject: Optional[str] = None


@dataclass
class Dataset:
    root: Path
    format: str
    samples: List[Sample]
    synthetic: bool
    sha256: Dict[str, str] = field(default_factory=dict)

    def counts(self) -> Dict[str, int]:
        return {name: sum(s.label == i for s in self.samples) for i, name in enumerate(LABELS)}

    def fingerprint(self) -> str:
        """sha256 over sorted (path, label, content hash): identifies the exact data a model saw."""
        h = hashlib.sha256()
        for s in sorted(self.samples, key=lambda s: s.path):
            h.update(f"{s.path}\t{s.label}\t{self.sha256.get(s.path, '')}\n".encode())
        return h.hexdigest()

    def summary(self) -> dict:
        return {"root": str(self.root), "format": self.format, "n": len(self.samples),
                "counts": self.counts(), "fingerprint": self.fingerprint(), "synthetic": self.synthetic}


def _walk(root: Path) -> Tuple[List[Path], List[Path]]:
    """Image files, and synthetic markers anywhere under `root` (a synth set copied into a
    subfolder of real data must still mark the whole set synthetic)."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    images = [p for p in files if p.suffix.lower() in imaging.SUPPORTED_SUFFIXES]
    return images, [p for p in files if p.name.lower() in SYNTHETIC_MARKERS]


def _rel(root: Path, p: Path) -> str:
    return p.relative_to(root).as_posix()


def _examples(paths: List[str]) -> str:
    more = f" (and {len(paths) - SHOW} more)" if len(paths) > SHOW else ""
    return ", ".join(paths[:SHOW]) + more


def _class_dirs(p: Path, root: Path, names: set) -> List[str]:
    """Class folder names on the path below `root`, outermost first (lower case)."""
    return [part.lower() for part in p.relative_to(root).parts[:-1] if part.lower() in names]


def _label(folder: str) -> int:
    return int(folder in POSITIVE_DIRS)


def detect_format(root: Path, files: List[Path]) -> str:
    """Guess the layout from folder and file names."""
    if any(_class_dirs(p, root, {"all", "hem"}) for p in files) and any(CNMC_RE.match(p.name) for p in files):
        return "cnmc"
    idb = [p for p in files if IDB_RE.match(p.name)]
    if idb:
        return "all-idb1" if all(p.suffix.lower() in (".jpg", ".jpeg") for p in idb) else "all-idb2"
    if any(_class_dirs(p, root, POSITIVE_DIRS | NEGATIVE_DIRS) for p in files):
        return "folders"
    raise TrainerError(
        f"cannot tell the layout of {root} from its names (e.g. {_examples([_rel(root, p) for p in files])}). "
        "Expected ALL-IDB (ImNNN_1.jpg / ImNNN_0.tif), C-NMC (all/ and hem/ folders with "
        "UID_<subject>_..._all.bmp) or class folders (ALL/ and normal/); pass --format to say which."
    )


def _parse(root: Path, fmt: str, files: List[Path]) -> Tuple[List[Sample], List[str]]:
    """Samples, and files whose names do not fit the layout.

    The class comes from the deepest class folder (the one closest to the file): in
    `1/normal/x.tif` the "1" is a batch, not a label. A path whose class folders disagree is
    ambiguous and refused rather than guessed.
    """
    samples, bad, ambiguous = [], [], []
    names = {"all", "hem"} if fmt == "cnmc" else POSITIVE_DIRS | NEGATIVE_DIRS
    for p in files:
        rel = _rel(root, p)
        if fmt in ("all-idb1", "all-idb2"):
            m = IDB_RE.match(p.name)
            want = (".jpg", ".jpeg") if fmt == "all-idb1" else (".tif", ".tiff")
            if m and p.suffix.lower() in want:
                samples.append(Sample(rel, int(m.group(2))))
            else:
                bad.append(rel)
            continue
        dirs = _class_dirs(p, root, names)
        if len({_label(d) for d in dirs}) > 1:
            ambiguous.append(rel)
            continue
        folder = dirs[-1] if dirs else None
        m = CNMC_RE.match(p.name)
        if fmt == "cnmc":
            if m and folder == m.group(4).lower():
                samples.append(Sample(rel, _label(folder), _cnmc_subject(m.group(1))))
            else:
                bad.append(rel)
        elif folder is None:
            bad.append(rel)
        else:  # C-NMC names carry the subject: group by it here too, or subjects leak across splits
            samples.append(Sample(rel, _label(folder), _cnmc_subject(m.group(1)) if m else None))
    if ambiguous:
        raise TrainerError(f"{len(ambiguous)} image file(s) in {root} sit below class folders of both classes, "
                           f"e.g. {_examples(ambiguous)}; the class is unclear. Rename the folders so that "
                           f"only one level names a class ({NAMING_HELP['folders']}).")
    return samples, bad


def _cnmc_subject(raw: str) -> str:
    for group in CNMC_ALIASES:
        if raw in group:
            return "+".join(sorted(group))
    return raw


NAMING_HELP = {
    "all-idb1": "ALL-IDB1 names are ImNNN_1.jpg (ALL) or ImNNN_0.jpg (healthy)",
    "all-idb2": "ALL-IDB2 names are ImNNN_1.tif (ALL) or ImNNN_0.tif (healthy)",
    "cnmc": "C-NMC files are all/UID_<subject>_<image>_<cell>_all.bmp or hem/UID_H<subject>_..._hem.bmp",
    "folders": "class folders are named ALL/ (or blast, positive, 1) and normal/ (or hem, healthy, 0)",
}


def load(root: Path, fmt: str = "auto", progress: bool = False) -> Dataset:
    """Find, name-check and decode-check every image; raises TrainerError on anything unusable."""
    from tqdm import tqdm

    root = Path(root)
    if fmt not in FORMATS:
        raise TrainerError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not root.is_dir():
        raise TrainerError(f"data directory {root} does not exist or is not a directory")
    files, markers = _walk(root)
    if not files:
        raise TrainerError(f"{root} holds no images ({', '.join(imaging.SUPPORTED_SUFFIXES)}); "
                           "point --data at the folder with the image files")
    if fmt == "auto":
        fmt = detect_format(root, files)
    samples, bad = _parse(root, fmt, files)
    if bad:
        raise TrainerError(f"{len(bad)} image file(s) in {root} do not follow the {fmt} naming: "
                           f"{_examples(bad)}. {NAMING_HELP[fmt]}; rename or remove them.")
    digests: Dict[str, str] = {}
    broken = []
    for s in tqdm(samples, desc="checking images", unit="img", disable=not progress):
        try:
            data = (root / s.path).read_bytes()
            imaging.decode(data)
        except imaging.ImageError as exc:
            broken.append(f"{s.path} ({exc.message})")
            continue
        except OSError as exc:
            broken.append(f"{s.path} (cannot read: {exc.strerror})")
            continue
        digests[s.path] = hashlib.sha256(data).hexdigest()
    if broken:
        raise TrainerError(f"{len(broken)} image file(s) cannot be decoded: {_examples(broken)}. "
                           "Replace or remove them.")
    ds = Dataset(root, fmt, samples, synthetic=bool(markers), sha256=digests)
    if markers:
        log.warning("data set is SYNTHETIC (marked by %s); the run and any model from it are marked synthetic",
                    _examples([_rel(root, m) for m in markers]))
    missing = [name for name, n in ds.counts().items() if n == 0]
    if missing:
        raise TrainerError(f"{root} has images of one class only ({ds.counts()}); "
                           f"add images of class {', '.join(missing)}")
    return ds
