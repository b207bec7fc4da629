"""A hostile ``.pt`` file: unpickling it runs code (it writes a marker file), loading it with
``weights_only`` refuses it. Shared by the checkpoint and model-file tests."""

from __future__ import annotations

from pathlib import Path


class Payload:
    """Pickles to ``open(marker, "w")``: a file appears only if something unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_payload(path: Path, marker: Path) -> Path:
    """Save a ``Payload`` at ``path`` the way ``torch.save`` writes checkpoints."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(Payload(marker), path)
    return path


def payload_is_live(tmp: Path) -> bool:
    """The payload does run when unpickled (so a test that finds no marker means something)."""
    import torch

    marker = tmp / "live-marker"
    path = write_payload(tmp / "live.pt", marker)
    torch.load(path, weights_only=False)
    return marker.exists()
