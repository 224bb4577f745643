"""``<run>/manifest.json``: the run's one ledger. For each finished stage: when it finished,
what it hands on (``info``: the teacher's labelled set), what it was computed from, and the
content hash of every file it hands to the next stage.

The teacher stage records the teacher's weights, tokenizer and logit cache and the evaluation
labels; the winner export records the student. Every command that opens an existing run checks
them before Ray starts, so a truncated, swapped or foreign file is one clear error naming the
file, not a wrong result or a traceback minutes later. Paths are relative to the run directory,
so a copied or moved run still checks.

Each finished stage also records its inputs (the config values it was built from, the data's
content hash) and the code version; a run whose ``config.yaml`` or data file was edited by hand
afterwards is refused naming the key, as a ``--set`` of that key would be.

Older runs kept the finished stages in a second file, ``stages.json``; the first read
of such a run moves them into the manifest and removes it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable

from raydistill.platform.errors import CheckpointError
from raydistill.platform.rundir import MANIFEST, RunDir, atomic_write_json, file_sha256


def stage_files(run: RunDir, stage: str) -> list[Path]:
    """What ``stage`` hands on: the files of the model directory it wrote (and, for the
    teacher, the evaluation labels), whichever of them exist."""
    if stage == "teacher":
        return sorted([*run.teacher.glob("*"), *run.labels.glob("*")])
    if stage == "winner":
        return sorted(run.student.glob("*"))
    raise ValueError(f"no recorded files for stage {stage!r}")


def record(run: RunDir, stage: str, inputs: dict[str, Any] | None = None, code: str | None = None,
           info: dict[str, Any] | None = None) -> None:
    """Mark ``stage`` finished, with what it hands on (``info``), the inputs it was built from
    (flat ``key: value``), the code version that built it and its files' hashes."""
    manifest = _read(run)
    files = {k: v for k, v in manifest.get("files", {}).items() if v.get("stage") != stage}
    for path in stage_files(run, stage) if stage in ("teacher", "winner") else []:
        if path.is_file():
            files[path.relative_to(run.root).as_posix()] = {"sha256": file_sha256(path), "stage": stage}
    stages = dict(manifest.get("stages", {}))
    stages[stage] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "info": info or {},
                     "inputs": inputs or {}, "code": code}
    atomic_write_json(run.manifest, {**manifest, "files": dict(sorted(files.items())), "stages": stages})


def finished(run: RunDir) -> dict[str, dict[str, Any]]:
    """The finished stages and what each handed on (``info``), oldest ledger migrated first."""
    _migrate_legacy(run)
    return {stage: entry.get("info", {}) for stage, entry in _read(run).get("stages", {}).items()
            if isinstance(entry, dict) and "finished" in entry}


def forget(run: RunDir, stage: str) -> None:
    """Mark ``stage`` unfinished: the next run of the study does it again."""
    manifest = _read(run)
    stages = {k: v for k, v in manifest.get("stages", {}).items() if k != stage}
    atomic_write_json(run.manifest, {**manifest, "stages": stages})


def _migrate_legacy(run: RunDir) -> None:
    """Move an older run's ``stages.json`` (stage -> {finished, ...info}) into the manifest."""
    path = run.legacy_stages
    if not path.is_file():
        return
    try:
        legacy = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is corrupt ({err}); fix or delete it to re-run every stage") from None
    if not isinstance(legacy, dict) or not all(isinstance(v, dict) for v in legacy.values()):
        raise CheckpointError(f"{path} is corrupt: expected a JSON object of stages")
    manifest = _read(run)
    stages = dict(manifest.get("stages", {}))
    for stage, entry in legacy.items():
        finished_at = entry.get("finished", "unknown")
        info = {k: v for k, v in entry.items() if k != "finished"}
        stages[stage] = {**stages.get(stage, {}), "finished": finished_at, "info": info}
    atomic_write_json(run.manifest, {**manifest, "files": manifest.get("files", {}), "stages": stages})
    path.unlink()


def stage_inputs(run: RunDir, done: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The inputs each of the ``finished`` stages recorded (stages without a record: none)."""
    stages = _read(run).get("stages", {})
    return {stage: (stages.get(stage) or {}).get("inputs", {}) for stage in done}


def stale(key: str, old: Any, new: Any, stage: str) -> str:
    """One line naming a value a finished stage was built from and what it would become."""
    return f"{key}: {old!r} -> {new!r} (the {stage} stage was built with the old value)"


def changed_inputs(run: RunDir, done: Iterable[str], current: dict[str, Any]) -> list[str]:
    """What differs between the inputs each ``finished`` stage recorded and ``current`` (a flat
    ``key: value`` map of today's config and data): one line per key, naming the stage."""
    changed = []
    for stage, inputs in stage_inputs(run, done).items():
        for key, value in sorted(inputs.items()):
            if key in current and current[key] != value:
                changed.append(stale(key, value, current[key], stage))
    return changed


def verify(run: RunDir, stages: Iterable[str]) -> None:
    """Raise CheckpointError naming every file recorded by a ``finished`` stage that is
    missing or whose content changed since. A run without a manifest (older runs) passes; so
    do the files of a stage that is no longer marked finished (it will write them again)."""
    done = set(stages)
    files = {k: v for k, v in _read(run).get("files", {}).items() if v.get("stage") in done}
    problems = []
    for name, entry in files.items():
        path = run.root / name
        if not path.is_file():
            problems.append(f"{name} is missing (written by the {entry.get('stage')} stage)")
        elif file_sha256(path) != entry.get("sha256"):
            problems.append(f"{name} changed since the {entry.get('stage')} stage wrote it")
    if problems:
        raise CheckpointError(
            f"{run.root} does not match its {MANIFEST}:\n  " + "\n  ".join(problems)
            + "\nRestore those files, or start a new run: results built on them would not be the run's.")


def _read(run: RunDir) -> dict:
    path = run.manifest
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is corrupt ({err})") from None
    if (not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict)
            or not isinstance(manifest.get("stages", {}), dict)):
        raise CheckpointError(f"{path} is corrupt: expected a JSON object with 'files' and 'stages' objects")
    return manifest
