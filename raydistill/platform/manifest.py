"""``<run>/manifest.json``: the content hash of every file a stage hands to the next, and what
each stage was computed from.

The teacher stage records the teacher's weights, tokenizer and logit cache and the evaluation
labels; the winner export records the student. Every command that opens an existing run checks
them before Ray starts, so a truncated, swapped or foreign file is one clear error naming the
file, not a wrong result or a traceback minutes later. Paths are relative to the run directory,
so a copied or moved run still checks.

Each finished stage also records its inputs (the config values it was built from, the data's
content hash) and the code version; a run whose ``config.yaml`` or data file was edited by hand
afterwards is refused naming the key, as a ``--set`` of that key would be.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from raydistill.platform.errors import CheckpointError
from raydistill.platform.rundir import RunDir, atomic_write_json

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def stage_files(run: RunDir, stage: str) -> list[Path]:
    """What ``stage`` hands on: the files of the model directory it wrote (and, for the
    teacher, the evaluation labels), whichever of them exist."""
    if stage == "teacher":
        return sorted([*run.teacher.glob("*"), *run.labels.glob("*")])
    if stage == "winner":
        return sorted(run.student.glob("*"))
    raise ValueError(f"no recorded files for stage {stage!r}")


def record(run: RunDir, stage: str, inputs: dict[str, Any] | None = None, code: str | None = None) -> None:
    """Add (or replace) ``stage``'s files and their hashes in the manifest, with the inputs it
    was built from (flat ``key: value``) and the code version that built it."""
    manifest = _read(run)
    files = {k: v for k, v in manifest.get("files", {}).items() if v.get("stage") != stage}
    for path in stage_files(run, stage) if stage in ("teacher", "winner") else []:
        if path.is_file():
            files[path.relative_to(run.root).as_posix()] = {"sha256": file_sha256(path), "stage": stage}
    stages = dict(manifest.get("stages", {}))
    stages[stage] = {"inputs": inputs or {}, "code": code}
    atomic_write_json(run.root / MANIFEST, {**manifest, "files": dict(sorted(files.items())), "stages": stages})


def stage_inputs(run: RunDir, finished: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The inputs each of the ``finished`` stages recorded (stages without a record: none)."""
    stages = _read(run).get("stages", {})
    return {stage: (stages.get(stage) or {}).get("inputs", {}) for stage in finished}


def changed_inputs(run: RunDir, finished: Iterable[str], current: dict[str, Any]) -> list[str]:
    """What differs between the inputs each ``finished`` stage recorded and ``current`` (a flat
    ``key: value`` map of today's config and data): one line per key, naming the stage."""
    changed = []
    for stage, inputs in stage_inputs(run, finished).items():
        for key, value in sorted(inputs.items()):
            if key in current and current[key] != value:
                changed.append(f"{key}: {value!r} -> {current[key]!r} (the {stage} stage was built with the old value)")
    return changed


def verify(run: RunDir, finished: Iterable[str]) -> None:
    """Raise CheckpointError naming every file recorded by a ``finished`` stage that is
    missing or whose content changed since. A run without a manifest (older runs) passes; so
    do the files of a stage that is no longer marked finished (it will write them again)."""
    finished = set(finished)
    files = {k: v for k, v in _read(run).get("files", {}).items() if v.get("stage") in finished}
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
    path = run.root / MANIFEST
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
