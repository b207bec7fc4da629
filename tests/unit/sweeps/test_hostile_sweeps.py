"""Hostile sweep state, second pass (issue 23, finding 11): damaged heartbeat files and a damaged
or emptied study journal are no traceback, one clear error at most."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_damaged_heartbeats_are_no_traceback(tmp_path: Path) -> None:
    """Finding 11: a heartbeat file that is [], null, text, or has a bad or missing pid, on a
    RUNNING trial: `status` treats it as no heartbeat (orphaned after the grace), no traceback."""
    import json
    import socket

    import optuna

    from xvhpc.sweeps.heartbeat import heartbeat_path, orphaned

    study = optuna.create_study()
    study.ask()
    trial = study.trials[0]
    path = heartbeat_path(tmp_path, trial.number)
    path.parent.mkdir(parents=True)
    host = socket.gethostname()
    for text in ("[]", "null", "not json", json.dumps({"host": host, "pid": "abc"}),
                 json.dumps({"host": host})):  # fmt: skip
        path.write_text(text)
        assert orphaned(tmp_path, trial) == ""  # started just now: within the grace
        late = trial.datetime_start.timestamp() + 10_000
        assert "no heartbeat" in orphaned(tmp_path, trial, now=late)


def test_a_damaged_or_emptied_study_journal_is_one_clear_error(tmp_path: Path) -> None:
    """Finding 11: a garbage line or random bytes in study.journal, or an emptied journal while
    slots have run trials, is a StudyError naming the journal (status shows it as a warning)."""
    import os

    import optuna

    from xvhpc.rundir import Layout
    from xvhpc.sweeps.study import STUDY_NAME, StudyError, existing_study, storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage(tmp_path))
    study.tell(study.ask(), 0.5)
    journal = Layout(tmp_path).study_journal
    good = journal.read_bytes()
    assert existing_study(tmp_path) is not None
    lines = good.splitlines(keepends=True)
    journal.write_bytes(lines[0] + b"{garbage\n" + b"".join(lines[1:]))
    with pytest.raises(StudyError, match=r"study.journal: the study journal is damaged"):
        existing_study(tmp_path)
    journal.write_bytes(os.urandom(2048))
    with pytest.raises(StudyError, match="damaged"):
        existing_study(tmp_path)
    journal.write_bytes(b"")
    (tmp_path / "train" / "0").mkdir(parents=True)
    (tmp_path / "train" / "0" / "trial.json").write_text('{"trial": 0}')
    with pytest.raises(StudyError, match="the study journal is empty"):
        existing_study(tmp_path)
