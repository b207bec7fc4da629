"""``xvhpc init`` on hostile sources (second pass): names that hold newlines never become YAML
keys of the written spec (they were copied into its ``#`` comments), a FIFO named as the data
does not hang it, and a CSV of 100,000 columns gets a message of bounded length."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import yaml

from xvhpc.cli import main

INJECT = "\nresources:\n  nodes: 64\n#"  # a key init does not write without --site


def _images(folder: Path, count: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"im{i}.png"
        Image.new("RGB", (32, 32), (40 * i % 256, 90, 200)).save(path)
        paths.append(path)
    return paths


def _written(out: Path) -> dict:
    text = out.read_text()
    return yaml.safe_load(text)


def test_newlines_in_given_paths_stay_in_comments(tmp_path: Path, capsys) -> None:
    data = tmp_path / f"data{INJECT}"
    for label in ("a", "b"):
        _images(data / label, 6)
    out = tmp_path / f"spec{INJECT}.yaml"
    assert main(["init", str(data), "--out", str(out), "--pretrained", "none"]) == 0
    spec = _written(out)
    assert "resources" not in spec, "a path's newline started a YAML key"
    assert spec["data"]["source"] == str(data)  # the value itself is kept exactly
    assert "\\nresources:" in out.read_text()  # shown escaped in the comment


def test_newlines_in_csv_labels_stay_in_comments(tmp_path: Path, capsys) -> None:
    paths = _images(tmp_path / "img", 8)
    labels = ["normal", f"odd{INJECT}"] * 4
    rows = [f'{p.name},"{label}"' for p, label in zip(paths, labels, strict=True)]
    csv_path = tmp_path / "img" / "labels.csv"
    csv_path.write_text("\n".join(["file,finding", *rows]) + "\n")
    out = tmp_path / "spec.yaml"
    assert main(["init", str(csv_path), "--out", str(out), "--pretrained", "none"]) == 0
    spec = _written(out)
    assert "resources" not in spec, "a CSV value's newline started a YAML key"
    assert spec["data"]["csv"]["label_column"] == "finding"


def test_a_fifo_as_the_data_is_refused_not_read(tmp_path: Path, capsys) -> None:
    fifo = tmp_path / "labels.csv"
    os.mkfifo(fifo)
    got: dict[str, int] = {}
    worker = threading.Thread(
        target=lambda: got.setdefault(
            "rc", main(["init", str(fifo), "--out", str(tmp_path / "s.yaml")])
        ),
        daemon=True,
    )
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the reader so the thread ends, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("xvhpc init hung reading a FIFO")
    assert got["rc"] == 2 and "not a regular file" in capsys.readouterr().err


def test_a_csv_of_100k_columns_gets_a_bounded_message(tmp_path: Path, capsys) -> None:
    csv_path = tmp_path / "wide.csv"
    columns = [f"c{i}" for i in range(100_000)]
    csv_path.write_text(",".join(columns) + "\n" + ",".join(["x"] * len(columns)) + "\n")
    assert main(["init", str(csv_path), "--out", str(tmp_path / "s.yaml")]) == 2
    err = capsys.readouterr().err
    assert "c0, c1" in err and "more)" in err and len(err) < 5000, len(err)
