"""Train/validation/test split by source group, made before any augmentation.

A group is everything that must stay on one side: one source image, all cells of one subject
(C-NMC, aliases merged), and any byte-identical copies. The originals split after augmenting,
which put copies of one image on both sides and inflated their validation scores.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence

import numpy as np

from trainer import LABELS, TrainerError
from trainer.datasets import Dataset

SPLITS = ("train", "val", "test")
SKEW = 2.0  # warn when one group alone exceeds this multiple of its split's target share
log = logging.getLogger("trainer")


def groups(ds: Dataset) -> List[int]:
    """Group id per sample (union of same subject and same content)."""
    parent = list(range(len(ds.samples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: Dict[str, int] = {}
    for i, s in enumerate(ds.samples):
        for key in (f"subject:{s.subject}" if s.subject else None, f"sha:{ds.sha256.get(s.path, s.path)}"):
            if key is None:
                continue
            if key in first:
                parent[find(i)] = find(first[key])
            else:
                first[key] = i
    roots = [find(i) for i in range(len(ds.samples))]
    remap: Dict[int, int] = {}
    return [remap.setdefault(r, len(remap)) for r in roots]


def _group_labels(ds: Dataset, gid: List[int]) -> Dict[int, int]:
    labels: Dict[int, set] = {}
    for s, g in zip(ds.samples, gid):
        labels.setdefault(g, set()).add(s.label)
    mixed = [g for g, ls in labels.items() if len(ls) > 1]
    if mixed:
        paths = [s.path for s, g in zip(ds.samples, gid) if g == mixed[0]]
        raise TrainerError(f"the same image or subject carries both labels: {', '.join(paths[:5])}; "
                           "fix the labels (identical files must have one class)")
    return {g: ls.pop() for g, ls in labels.items()}


def split(ds: Dataset, *, val_frac: float = 0.15, test_frac: float = 0.15, seed: int = 2,
          test_list: Optional[Sequence[str]] = None) -> Dict[str, List[str]]:
    """Stratified by class, grouped; returns {"train","val","test"} -> sorted relative paths.

    `test_list` (None = no fixed test split) names the test images; an empty list is an error,
    not a silent random split.
    """
    gid = groups(ds)
    glabel = _group_labels(ds, gid)
    size: Dict[int, int] = {}
    for g in gid:
        size[g] = size.get(g, 0) + 1
    rng = np.random.default_rng(seed)
    assign: Dict[int, str] = {}
    fixed = test_list is not None
    if fixed:
        if not test_list:
            raise TrainerError("--test-list lists no files; put one path (relative to --data) per line, "
                               "or leave --test-list out for a random test split")
        by_path = {s.path: g for s, g in zip(ds.samples, gid)}
        unknown = [p for p in test_list if p not in by_path]
        if unknown:
            raise TrainerError(f"--test-list names files not in the data set: {', '.join(unknown[:5])}; "
                               "use paths relative to --data")
        for p in test_list:
            assign[by_path[p]] = "test"
    for label in range(len(LABELS)):
        free = [g for g in sorted(glabel) if glabel[g] == label and g not in assign]
        rng.shuffle(free)
        need = 2 if fixed else 3
        if len(free) < need:
            raise TrainerError(
                f"class {LABELS[label]} has only {len(free)} independent source group(s) (images or subjects) "
                f"left to split; need at least {need} so train, validation and test each get one. Add data.")
        total = sum(size[g] for g in free) + sum(size[g] for g in assign if glabel[g] == label)
        targets = [("val", val_frac)] if fixed else [("test", test_frac), ("val", val_frac)]
        for k, (name, frac) in enumerate(targets):
            want, got = max(1.0, frac * total), 0
            keep = len(targets) - k  # groups still owed to the later splits and train
            while len(free) > keep and (got == 0 or got + size[free[-1]] / 2 <= want):
                g = free.pop()
                assign[g] = name
                got += size[g]
                if size[g] > SKEW * want:
                    _warn_skew(ds, gid, g, name, LABELS[label], want)
        for g in free:
            assign[g] = "train"
    out: Dict[str, List[str]] = {k: [] for k in SPLITS}
    for s, g in zip(ds.samples, gid):
        out[assign[g]].append(s.path)
    for k in SPLITS:
        out[k].sort()
        members = set(out[k])
        present = {s.label for s in ds.samples if s.path in members}
        if len(present) < len(LABELS):
            raise TrainerError(f"the {k} split has one class only; with --test-list, list images of both classes")
    check_disjoint(ds, out)
    return out


def _warn_skew(ds: Dataset, gid: List[int], g: int, split_name: str, label: str, want: float) -> None:
    """A group is indivisible, so one large subject (or merged aliases) can swamp a small split."""
    members = [s for s, gi in zip(ds.samples, gid) if gi == g]
    subjects = sorted({s.subject for s in members if s.subject})
    what = f"subject {', '.join(subjects)}" if subjects else f"source group of {members[0].path}"
    log.warning("%s holds %d %s images, far more than the %s split's target of about %.0f: the split "
                "proportions are skewed; add subjects or change --seed", what, len(members), label,
                split_name, want)


def check_disjoint(ds: Dataset, splits: Dict[str, List[str]]) -> None:
    """Fail loudly if any source group (image, subject, identical content) crosses splits."""
    gid = groups(ds)
    where: Dict[int, str] = {}
    by_path = {s.path: g for s, g in zip(ds.samples, gid)}
    for name in SPLITS:
        for p in splits[name]:
            g = by_path[p]
            if where.setdefault(g, name) != name:
                raise AssertionError(f"leak: {p} is in {name} but its group is in {where[g]}")
