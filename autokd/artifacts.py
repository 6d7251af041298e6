"""Teacher files as Optuna artifacts: uploaded once by a search, fetched by any worker.

Why artifacts: a worker on another machine has only the storage URL; the teacher the search used
must reach it byte for byte (its hash is checked). Stores: a (shared) directory, ``file://DIR``,
``s3://BUCKET`` or ``gs://BUCKET``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import optuna

from autokd.errors import ConfigError, StudyError
from autokd.study import StudyPaths
from autokd.teachers import file_hash

__all__ = ["artifact_store", "fetch_artifact", "publish_teacher", "remove_artifact",
           "store_location", "teacher_file"]


def artifact_store(location: str) -> Any:
    """An Optuna artifact store: ``DIR``, ``file://DIR``, ``s3://BUCKET`` or ``gs://BUCKET``."""
    from optuna.artifacts import Backoff as StoreBackoff
    from optuna.artifacts import FileSystemArtifactStore

    scheme, sep, rest = location.partition("://")
    if not sep or scheme == "file":
        path = Path(rest if sep else location).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return FileSystemArtifactStore(str(path))
    if scheme in ("s3", "gs"):
        return StoreBackoff(_cloud_store(scheme, rest.strip("/")))
    raise ConfigError(f"bad --artifacts {location!r}: use a directory, file://DIR, s3://BUCKET or "
                      "gs://BUCKET")


def _cloud_store(scheme: str, bucket: str) -> Any:
    if not bucket or "/" in bucket:
        raise ConfigError(f"--artifacts {scheme}://BUCKET takes a bucket name only, "
                          f"got {bucket!r}")
    try:
        if scheme == "s3":
            from optuna.artifacts import Boto3ArtifactStore

            return Boto3ArtifactStore(bucket)
        from optuna.artifacts import GCSArtifactStore

        return GCSArtifactStore(bucket)
    except ImportError as exc:
        raise ConfigError(f"--artifacts {scheme}:// needs the {exc.name} package") from None


def store_location(artifacts: str | None, paths: StudyPaths) -> str:
    """The store a search uploads to: ``--artifacts``, else results/<name>/artifacts."""
    loc = artifacts or str(paths.root / "artifacts")
    return loc if "://" in loc else str(Path(loc).expanduser().resolve())


def publish_teacher(study: optuna.Study, ref: str, location: str,
                    known: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Upload a teacher file once (``known``: entries by sha from an earlier run).

    Teachers given as ``module:function`` stay references, which a worker resolves on its own
    machine (the hash check catches a different one).
    """
    path = Path(ref)
    if not path.is_file():
        return {"ref": ref}
    sha = file_hash(path)
    if sha in known:
        return {**known[sha], "ref": ref}
    from optuna.artifacts import upload_artifact

    artifact_id = upload_artifact(artifact_store=artifact_store(location), file_path=str(path),
                                  study_or_trial=study)
    return {"ref": ref, "file": path.name, "sha": sha, "artifact_id": artifact_id}


def teacher_file(entry: dict[str, Any], location: str, paths: StudyPaths) -> str:
    """The teacher file on this machine: the original path, a cached copy, or a download."""
    if "artifact_id" not in entry:
        return entry["ref"]
    cached = paths.root / "teachers" / f"{entry['sha']}-{entry['file']}"
    for candidate in (Path(entry["ref"]), cached):
        if candidate.is_file() and file_hash(candidate) == entry["sha"]:
            return str(candidate)
    return str(_download(entry, location, cached))


def fetch_artifact(artifact_id: str, location: str, dest: Path) -> Path:
    """Download an artifact to ``dest``, atomically (workers may fetch the same one at once).

    Raises:
        OSError, optuna.artifacts.exceptions.ArtifactNotFound: the store does not have it.
    """
    from optuna.artifacts import download_artifact

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    os.unlink(tmp)  # download_artifact refuses to overwrite
    try:
        download_artifact(artifact_store=artifact_store(location), file_path=tmp,
                          artifact_id=artifact_id)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def remove_artifact(artifact_id: str, location: str) -> None:
    """Delete an artifact from the store; one already gone is not an error."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    try:
        artifact_store(location).remove(artifact_id)
    except (OSError, ArtifactNotFound):
        pass


def _download(entry: dict[str, Any], location: str, dest: Path) -> Path:
    from optuna.artifacts.exceptions import ArtifactNotFound

    try:
        fetch_artifact(entry["artifact_id"], location, dest)
    except (OSError, ArtifactNotFound) as exc:
        raise StudyError(f"cannot fetch teacher {entry['file']} from the artifact store "
                         f"{location}: {exc}; pass --artifacts with the store the search used "
                         "(a shared directory or s3://BUCKET)") from None
    if file_hash(dest) != entry["sha"]:
        raise StudyError(f"teacher {entry['file']} from {location} does not match the study's "
                         f"copy (hash {file_hash(dest)} != {entry['sha']})")
    return dest
