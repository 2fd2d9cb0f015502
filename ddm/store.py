"""The artifact store: every stage's output, keyed by the configuration that made it.

An artifact lives in ``<root>/<kind>/<hash>/`` as ``artifact.pt`` beside ``config.json``. The
hash is taken over the full configuration of the stage *and everything upstream of it*, so a
changed learning rate gives a new key instead of silently reusing an old trajectory. On load
the stored configuration is compared with the requested one and a mismatch is refused; a
truncated or corrupt file is reported with the command that removes it. Writes go to a
temporary file that is renamed into place, so an interrupted run never leaves half an artifact.

Several processes may share one store (the book executes chapters side by side): a process about
to compute an artifact first claims it (:meth:`ArtifactStore.claim`, an advisory lock on a file
in ``<root>/.claims/``), so a second process that needs the same artifact waits for it instead of computing it
again. A claim dies with its process, so a crashed run blocks nobody.
"""

from __future__ import annotations

import json
import os
import sys
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from ddm.config import config_hash

if sys.platform != "win32":
    import fcntl
else:  # pragma: no cover - no advisory locks: processes sharing a store may compute an artifact twice
    fcntl = None


class StoreError(RuntimeError):
    """An artifact that cannot be used: configuration mismatch or corrupt file."""


def _canonical(config: Any) -> Any:
    return json.loads(json.dumps(config, sort_keys=True, default=str))


def _read_umask() -> int:
    # The only way to read the umask is to set it; done once, at import, not around every write.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """The one way the package writes a file: ``write`` fills a temporary file in the same folder,
    which is then renamed into place, so an interrupted run never leaves half a file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes the file private (0600); give it the permissions any new file gets here.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path: Path) -> None:
    """A text file through :func:`atomic_write` (flushed to disk before the rename)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    atomic_write(path, write)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """A resumable stage's partial state (e.g. the distillation's synset, optimiser and random
    generator every ``distill.checkpoint_every`` steps), written atomically."""
    atomic_torch_save(state, Path(path))


def load_checkpoint(path: Path | None, stage: str = "distillation") -> dict[str, Any] | None:
    """The partial state saved at ``path`` by :func:`save_checkpoint`, or None when there is none.
    A truncated or corrupt file is never half-read: :class:`StoreError` names the file and the fix."""
    if path is None or not Path(path).exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated zip raises several types
        raise StoreError(f"{stage} checkpoint {path} is corrupt or truncated ({error}); "
                         f"remove it (rm {path}) to restart the {stage}") from error


class Claim:
    """The right to compute one artifact, held until :meth:`release` (or the end of a ``with``)."""

    def __init__(self, handle: Any = None):
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file drops its flock
            self._handle = None

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class ArtifactStore:
    """Config-hashed artifacts on disk. ``root=None`` keeps nothing (every call recomputes)."""

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root) if root is not None else None

    def path(self, kind: str, config: dict) -> Path:
        if self.root is None:
            raise StoreError("this store keeps nothing on disk (root=None)")
        return self.root / kind / config_hash(config)

    def exists(self, kind: str, config: dict) -> bool:
        return self.root is not None and (self.path(kind, config) / "artifact.pt").exists()

    def save(self, kind: str, config: dict, obj: Any) -> Path:
        folder = self.path(kind, config)
        atomic_write_text(json.dumps(_canonical(config), indent=2, sort_keys=True), folder / "config.json")
        atomic_torch_save(obj, folder / "artifact.pt")
        return folder

    def load(self, kind: str, config: dict) -> Any:
        folder = self.path(kind, config)
        stored_config_path = folder / "config.json"
        if not stored_config_path.exists():
            raise StoreError(f"{kind} artifact at {folder} has no config.json; remove the folder "
                             f"(rm -r {folder}) and run again")
        stored = json.loads(stored_config_path.read_text())
        if stored != _canonical(config):
            raise StoreError(
                f"{kind} artifact at {folder} was written by another configuration "
                f"(differing keys: {sorted(_diff_keys(stored, _canonical(config)))}); "
                f"remove it (rm -r {folder}) to recompute")
        try:
            return torch.load(folder / "artifact.pt", map_location="cpu", weights_only=False)
        except Exception as error:  # torch raises several types for truncated zip files
            raise StoreError(f"{kind} artifact {folder / 'artifact.pt'} is corrupt or truncated ({error}); "
                             f"remove it (rm -r {folder}) and run again") from error

    def claim(self, kind: str, config: dict, wait: bool = True) -> Claim | None:
        """An exclusive claim, among every process using this store, on computing the artifact of
        ``config``: waits until no other process holds it, or, with ``wait=False``, returns None
        at once when one does. Claims on different artifacts never wait for each other; a store
        without a root, or a system without ``flock``, grants every claim at once."""
        if self.root is None or fcntl is None:
            return Claim()
        # Kept apart from the artifacts (whose folders hold only what was computed) and never
        # deleted: removing a lock file another process waits on would let a third one in.
        lock = self.root / ".claims" / kind / f"{config_hash(config)}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return None
        except BaseException:
            handle.close()
            raise
        return Claim(handle)

    def get_or_compute(self, kind: str, config: dict, compute: Callable[[], Any]) -> Any:
        """Load the artifact made by ``config`` or compute and save it. When another process is
        computing it, wait and load its result."""
        if self.root is None:
            return compute()
        if self.exists(kind, config):
            return self.load(kind, config)
        with self.claim(kind, config):
            if self.exists(kind, config):  # made by the process this one waited for
                return self.load(kind, config)
            result = compute()
            self.save(kind, config, result)
        return result

    def checkpoint_path(self, kind: str, config: dict) -> Path | None:
        """Where a resumable stage keeps its partial state (None when the store keeps nothing)."""
        if self.root is None:
            return None
        return self.path(kind, config) / "checkpoint.pt"

    def clear(self, kind: str | None = None) -> None:
        if self.root is None:
            return
        target = self.root / kind if kind else self.root
        shutil.rmtree(target, ignore_errors=True)


def _diff_keys(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        out: set[str] = set()
        for key in keys:
            out |= _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return set() if a == b else {prefix.rstrip(".")}
