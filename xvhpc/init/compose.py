"""The spec ``xvhpc init`` writes: each choice taken from the survey with a ``# why`` comment,
validated by the very check ``xvhpc validate`` runs before the file is put in place.

Choices the task does not support (its ``TaskInfo.check`` names the key: detection takes no
class weights and no folds) are dropped with the task's own reason as the comment, so this
module never compares a task's name.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

from ..data.catalog import display_name
from ..registry import task_info
from ..spec import SpecError, load_spec
from .survey import InitError, Survey

FOLDS_BELOW = 1000  # labelled images under which cross-validation replaces one split
FOLDS = 5
RARE = 3  # a class with a third or less of the largest one's images is rare
MAX_COPIES = 10


class Choices:
    """The spec as a nested dict, with a comment per dotted key and the keys that may go."""

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}
        self.why: dict[str, str] = {}
        self.optional: set[str] = set()
        self.dropped: list[str] = []
        self.fallback: dict[str, Any] = {}  # key → the value taken where the task refuses one

    def set(self, key: str, value: Any, why: str = "", optional: bool = False) -> None:
        node = self.tree
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
        if why:
            self.why[key] = why
        if optional:
            self.optional.add(key)

    def drop(self, key: str, reason: str) -> bool:
        """Remove ``key`` (or the optional key it lies under), or take its fallback value;
        False when it is neither optional nor has a fallback."""
        if key in self.fallback:
            self.set(key, self.fallback.pop(key), reason)
            return True
        owner = next((k for k in self.optional if key == k or key.startswith(k + ".")), None)
        if owner is None:
            return False
        *parents, last = owner.split(".")
        node = self.tree
        for part in parents:
            node = node[part]
        node.pop(last, None)
        self.optional.discard(owner)
        self.dropped.append(f"{owner}: left out ({reason})")
        return True


def _image_size(s: Survey, asked: int | None) -> tuple[int, str]:
    if asked:
        return asked, "--image-size"
    if not s.sizes:
        return 224, "no image could be read: the usual ImageNet size"
    short = int(statistics.median(min(w, h) for w, h in s.sizes))
    size = max(32, min(short, 224) // 16 * 16)
    return size, f"median short side {short} px; pretrained models expect up to 224"


def _resize(s: Survey, size: int) -> tuple[str, str]:
    if not s.sizes:
        return "letterbox", "keeps the aspect ratio"
    aspects = [max(w, h) / max(1, min(w, h)) for w, h in s.sizes]
    short = statistics.median(min(w, h) for w, h in s.sizes)
    if short >= 8 * size:
        return "tile", f"median short side {short:.0f} px ≥ 8 × {size}: tiles keep fine detail"
    if max(aspects) <= 1.05:
        return "squash", "every image is square: nothing to pad or crop"
    return "letterbox", f"aspect ratios up to {max(aspects):.2f}: padding keeps shapes undistorted"


def _classes(c: Choices, s: Survey) -> None:
    """Class weights and augmentation copies for rare classes; folds for small data."""
    counts = s.counts
    top = max(counts.values())
    rare = {k: n for k, n in counts.items() if n * RARE <= top and k in s.catalog.classes}
    left = {}
    for label, n in sorted(rare.items()):
        copies = min(MAX_COPIES, math.ceil(top / n) - 1)
        c.set(f"data.augment.{label}", {"copies": copies, "hflip": True},
              f"{n} images vs {top}: {copies} flipped copies each, training split only",
              optional=True)  # fmt: skip
        if n * (copies + 1) * RARE <= top:
            left[label] = n * (copies + 1)
    if left:
        c.set("train.class_weights", "auto",
              f"even with copies, {', '.join(sorted(left))} stay under 1/{RARE} of the largest class",
              optional=True)  # fmt: skip
    total = sum(counts.values())
    smallest = min(counts.values())
    if total < FOLDS_BELOW and smallest >= FOLDS:
        c.set("data.split.folds", FOLDS,
              f"{total} images: {FOLDS}-fold cross-validation scores every image once",
              optional=True)  # fmt: skip
    elif total < FOLDS_BELOW:
        c.set("data.split.validation", 0.25,
              f"{total} images but a class of {smallest} (< {FOLDS}): one split, a larger held-out part")  # fmt: skip


def choose(s: Survey, args: Any, name: str) -> Choices:
    """Every key ``xvhpc init`` writes, from the survey and the flags."""
    c = Choices()
    c.set("name", name, "from the data's name")
    c.set("task", s.task, s.task_guess and f"guessed: {s.task_guess}")
    for key, value in _flat(s.data, "data"):
        c.set(key, value, s.why.get(key, ""))
    size, why = _image_size(s, args.image_size)
    c.set("data.image_size", size, why)
    resize, why = _resize(s, size)
    c.set("data.resize", resize, why)
    if s.sizes and s.gray * 2 > len(s.sizes):
        c.set("data.channels", 1, f"{s.gray} of {len(s.sizes)} images are grayscale: one channel")
    if s.groups:
        c.set("data.split.seed", 42, "group-aware: each patient/group on one side of the split")
    if s.duplicates.get("pairs"):
        c.set("data.leaks", "drop", f"{s.duplicates['pairs']} near-duplicate pair(s) across the split",
              optional=True)  # fmt: skip
    _classes(c, s)
    info = task_info(s.task)
    arch = args.arch or info.archs[0]
    c.set("model.arch", arch, "--arch" if args.arch else f"task {s.task}'s first model")
    pretrained = args.pretrained or info.pretrained[0]
    c.fallback["model.pretrained"] = "none"
    c.set("model.pretrained", pretrained, "--pretrained" if args.pretrained else
          f"pretrained features: xvhpc weights fetch {arch} on the login node first")  # fmt: skip
    train = sum(1 for x in s.catalog.samples if x.split == "train") or len(s.catalog.samples)
    iterations = args.max_iterations or min(20000, max(200, 30 * math.ceil(train / 32)))
    c.set("train.max_iterations", iterations,
          "--max-iterations" if args.max_iterations else f"about 30 epochs of {train} images at batch 32")  # fmt: skip
    if args.max_iterations:
        every = max(1, iterations // 2)
        c.set("train.val_every", every, "twice per run")
        c.set("train.checkpoint_every", every, "twice per run")
    return c


def _flat(tree: dict[str, Any], prefix: str) -> list[tuple[str, Any]]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += _flat(value, f"{prefix}.{key}")
        else:
            out.append((f"{prefix}.{key}", value))
    return out


def _scalar(value: Any) -> str:
    """A value as YAML flow text: JSON is YAML, and quotes every string safely."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InitError(f"{value!r}: not UTF-8; a spec cannot hold it (rename it)") from None
    return json.dumps(value, ensure_ascii=False)


def comment(text: str) -> str:
    """A comment line's text: names from the data (a folder, a CSV value, the paths given)
    may hold newlines, which would end the comment and start YAML keys; escaped as ``\\n``."""
    return display_name(text)


def emit(tree: dict[str, Any], why: dict[str, str], prefix: str = "", indent: int = 0) -> list[str]:
    """Block YAML of ``tree``, each key's reason as a comment line above it."""
    lines = []
    pad = " " * indent
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if dotted in why and why[dotted]:
            lines.append(f"{pad}# {comment(why[dotted])}")
        shown = key if key.replace("_", "").isalnum() else _scalar(key)
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{shown}:")
            lines += emit(value, why, dotted + ".", indent + 2)
        else:
            lines.append(f"{pad}{shown}: {_scalar(value)}")
    return lines


def render(c: Choices, header: list[str]) -> str:
    body = emit(c.tree, c.why)
    dropped = [f"# {comment(d)}" for d in c.dropped]
    return "\n".join([*(f"# {comment(h)}" for h in header), *dropped, *body]) + "\n"


def validated(c: Choices, header: list[str], folder: Path) -> str:
    """The spec text once ``load_spec`` (``xvhpc validate``'s check) accepts it; a refused
    optional choice is dropped with the task's reason and the rest checked again."""
    for _ in range(len(c.optional) + len(c.fallback) + 1):
        text = render(c, header)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=folder, delete=False) as fh:
            fh.write(text)
        try:
            load_spec(fh.name)
            return text
        except SpecError as exc:
            left = [p for p in exc.problems if not c.drop(p.key, p.message)]
            if left:
                raise InitError("the spec init wrote does not validate (a bug):\n"
                                + "\n".join(f"  {p}" for p in left)) from None  # fmt: skip
        finally:
            Path(fh.name).unlink(missing_ok=True)
    raise InitError("the spec init wrote does not validate")
