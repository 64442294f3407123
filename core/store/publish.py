"""The results file's one writer at a time, on a private working copy that is published by atomic rename.

NAME.results.duckdb (the published file) is what readers open: the dashboard, `show`, `info`. A writer (`explain`,
`score`, `related`, an import) never opens it with DuckDB, so a dashboard holding it open never blocks the command
line, and a reader never sees a half-written file:

1. `WriterLock`: an exclusive flock on NAME.results.duckdb.lock; a second writer of the same cache stops at once
   with one line naming the process that holds it (the lock goes with its process, also after kill -9).
2. `WorkingCopy.open`: the working copy NAME.results.duckdb.work is the published file copied (through
   NAME.results.duckdb.publish, renamed, so a copy cut short is never taken for a working copy). A working copy
   left by a writer that was killed holds everything it committed, LLM answers included: it is resumed, so
   nothing already paid for is asked for again.
3. `WorkingCopy.publish`: CHECKPOINT, copy to NAME.results.duckdb.publish, fsync, os.replace over the published
   file, fsync of the folder. The writer publishes after a commit once PUBLISH_INTERVAL_S have passed since the
   last time, and on close. Readers notice the new file by its signature (inode, size, mtime) and attach it again.

Kill points (core/killpoints.py) mark the steps the fault tests stop at.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.killpoints import kill_point
from core.paths import results_path
from core.store.database import Database, StoreError, reading
from core.store.schema import RESULTS, create_tables, read_meta, write_meta

log = logging.getLogger(__name__)

PUBLISH_ENV = "NEURON_ATLAS_PUBLISH_S"
"""Environment variable: seconds between two publications of a running writer (default PUBLISH_INTERVAL_S; 0
publishes after every commit, as the kill tests do)."""

PUBLISH_INTERVAL_S = 30.0
"""How often a long run makes its progress visible to readers (each publication copies the whole results file)."""

_COPY_CHUNK = 16 << 20


@dataclass(frozen=True)
class ResultsFiles:
    """The files around one cache's results."""

    published: Path
    """NAME.results.duckdb: what readers open."""

    @classmethod
    def of(cls, cache_path: Path) -> ResultsFiles:
        return cls(results_path(cache_path))

    def _with(self, suffix: str) -> Path:
        return self.published.with_name(self.published.name + suffix)

    @property
    def working(self) -> Path:
        """NAME.results.duckdb.work: the writer's private copy."""
        return self._with(".work")

    @property
    def staging(self) -> Path:
        """NAME.results.duckdb.publish: a copy being written; complete only once renamed."""
        return self._with(".publish")

    @property
    def lock(self) -> Path:
        """NAME.results.duckdb.lock: flocked by the one writer (the lock goes with its process, even on kill -9)."""
        return self._with(".lock")


def _wal(path: Path) -> Path:
    return Path(f"{path}.wal")


def _remove(path: Path) -> None:
    """Remove a DuckDB file and its write-ahead log."""
    path.unlink(missing_ok=True)
    _wal(path).unlink(missing_ok=True)


class FileLock:
    """An exclusive, non-blocking flock on a lock file, held until `release` (or the process ends, also on kill -9).

    The lock file holds the holder's process id and is removed on release; a process that locked a file removed
    meanwhile (its inode is no longer the path's) tries again, so two processes never hold locks on different files.
    `busy(holder)` is the StoreError message when another process (id `holder`) holds it, `unwritable(error)` the
    one when the lock file cannot be made.
    """

    def __init__(self, path: Path, busy: Callable[[str], str], unwritable: Callable[[OSError], str]) -> None:
        self._path = path
        self._fd: int | None = None
        for _ in range(100):
            try:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise StoreError(unwritable(error)) from error
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise StoreError(busy(holder)) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self._path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                break
            os.close(fd)  # the previous holder removed this file while we waited for its lock: take the new one
        else:
            raise StoreError(f"cannot lock {self._path}: it keeps being replaced")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Remove the lock file and drop the lock (in that order: see the class docstring)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()
            os.close(self._fd)
            self._fd = None


class WriterLock(FileLock):
    """The one writer of a cache's results (NAME.results.duckdb.lock): a second writer stops at once, naming the
    first."""

    def __init__(self, files: ResultsFiles, cache_path: Path) -> None:
        super().__init__(
            files.lock,
            busy=lambda holder: (f"another command (process {holder}) is writing the results of {cache_path}; wait "
                                 "until it finishes, or stop it (its published work is kept and the next run goes "
                                 "on from there)"),
            unwritable=lambda error: (f"cannot write results beside {cache_path}: {error.strerror} ({files.lock}); "
                                      "make the folder writable, or work on a copy of the cache in a folder you "
                                      "can write"))


def copy_file(source: Path, target: Path, point: str) -> None:
    """Copy `source` to `target` and fsync it; `point` is the kill point half way through the copy."""
    size = source.stat().st_size
    try:
        with source.open("rb") as src, target.open("wb") as dst:
            done, halfway_passed = 0, False
            while done < size:
                sent = os.sendfile(dst.fileno(), src.fileno(), done, min(_COPY_CHUNK, size - done))
                if sent == 0:
                    break
                done += sent
                if not halfway_passed and done >= size // 2:
                    halfway_passed = True
                    kill_point(point)
            os.fsync(dst.fileno())
    except OSError as error:
        target.unlink(missing_ok=True)  # a copy cut short is never used; on a full disk it holds the room needed
        if error.filename is None:  # sendfile names no file: say which one could not be written
            raise OSError(error.errno, error.strerror, str(target)) from error
        raise


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (a crash after it must not bring the old file back)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_interval() -> float:
    """Seconds between publications ($NEURON_ATLAS_PUBLISH_S, default PUBLISH_INTERVAL_S)."""
    text = os.environ.get(PUBLISH_ENV, "").strip()
    try:
        return max(float(text), 0.0) if text else PUBLISH_INTERVAL_S
    except ValueError:
        return PUBLISH_INTERVAL_S


@dataclass
class PublishStats:
    """What publishing cost a writer: for logs and bench/publish.py."""

    publications: int = 0
    seconds: float = 0.0
    bytes: int = 0


class WorkingCopy:
    """The working copy of one writer: attached to its Database as RESULTS; published by `publish`."""

    def __init__(self, db: Database, cache_path: Path, build_id: str) -> None:
        self._db = db
        self.files = ResultsFiles.of(cache_path)
        self._build_id = build_id
        self.stats = PublishStats()
        self.dirty = False
        """Committed changes not published yet."""
        self._interval = publish_interval()
        self._last = time.monotonic()

    def open(self) -> None:
        """Attach the working copy: a killed writer's leftover of this build, else a copy of the published file,
        else a new file; set aside a published file of another build or one that cannot be read."""
        files = self.files
        files.staging.unlink(missing_ok=True)  # a copy cut short: never complete
        if files.working.exists():
            if self._attach_working(resumed=True):
                log.warning("resuming the unpublished work a stopped run left in %s", files.working)
                self.dirty = True
                return
            _remove(files.working)
        if files.published.exists():
            copy_file(files.published, files.staging, "open.copying")
            if _wal(files.published).exists():  # left by a writer of the time before working copies
                copy_file(_wal(files.published), _wal(files.staging), "open.copying-wal")
                os.replace(_wal(files.staging), _wal(files.working))
            os.replace(files.staging, files.working)
            if self._attach_working(resumed=False):
                create_tables(self._db.cursor(), RESULTS)  # tables added since the file was written
                return
            _remove(files.working)
        self._db.attach(RESULTS, files.working, read_only=False)
        cur = self._db.cursor()
        create_tables(cur, RESULTS)
        write_meta(cur, RESULTS, {"recording_id": self._build_id})
        self.dirty = True

    def _attach_working(self, *, resumed: bool) -> bool:
        """Attach the working copy; False (detached again) when it is not results of this recording. A published
        file that cannot be read, or belongs to an earlier build, is moved aside (kept, never deleted)."""
        try:
            self._db.attach(RESULTS, self.files.working, read_only=False)
            with reading(self.files.working):
                recording_id = read_meta(self._db.cursor(), RESULTS).get("recording_id")
        except StoreError as error:
            if RESULTS in self._db.files:
                self._db.detach(RESULTS)
            if resumed:
                log.warning("a stopped run's working copy %s cannot be read (%s); starting from the published "
                            "results", self.files.working, error)
            else:
                self._set_aside("damaged", f"cannot be read ({error})")
            return False
        if recording_id == self._build_id:
            return True
        self._db.detach(RESULTS)
        if not resumed:
            self._set_aside("stale", "held results of an earlier build")
        return False

    def _set_aside(self, why: str, reason: str) -> None:
        published = self.files.published
        aside = published.with_name(f"{published.name.removesuffix('.duckdb')}.{why}-"
                                    f"{time.strftime('%Y%m%d-%H%M%S')}.duckdb")
        os.replace(published, aside)
        with contextlib.suppress(FileNotFoundError):
            os.replace(_wal(published), _wal(aside))
        log.warning("%s %s; moved to %s (new results start empty)", published, reason, aside)

    def committed(self) -> None:
        """After each commit: publish when the interval has passed."""
        self.dirty = True
        if time.monotonic() - self._last >= self._interval:
            self.publish()

    def publish(self, *, final: bool = False) -> None:
        """Checkpoint the working copy and rename a copy of it over the published file."""
        step = "final" if final else "publish"
        started = time.perf_counter()
        files = self.files
        with self._db.exclusive() as cur:  # nothing commits between the checkpoint and the end of the copy
            cur.execute(f"CHECKPOINT {RESULTS}")
            kill_point(f"{step}.checkpointed")
            copy_file(files.working, files.staging, f"{step}.copying")
        kill_point(f"{step}.before-rename")
        os.replace(files.staging, files.published)
        _fsync_folder(files.published.parent)
        kill_point(f"{step}.renamed")
        self.dirty = False
        self._last = time.monotonic()
        self.stats.publications += 1
        self.stats.seconds += time.perf_counter() - started
        self.stats.bytes += files.published.stat().st_size
        log.info("published %s (%.1f MB) in %.2f s", files.published, files.published.stat().st_size / 1e6,
                 time.perf_counter() - started)

    def finish(self, *, close: Callable[[], None]) -> None:
        """Publish what is left, `close()` the connection, then remove the working copy (kept if publishing
        failed: the next writer resumes it)."""
        try:
            if self.dirty or not self.files.published.exists():
                self.publish(final=True)
        finally:
            close()
        _remove(self.files.working)
