"""Background upkeep of a disk tier: adopting the pre-index layout once, and reconciling the
index with the files.

Both run in one daemon thread per tier (`Maintainer`), in bounded steps with pauses between
them, so requests on the event loop are never blocked behind them. Only one process per
directory does this work at a time: it holds a lease in the index.

- **Migration.** Before the index existed, each entry was one file named by its id. A new
  index over such a directory is marked "not migrated"; the maintainer then adopts the files
  folder by folder (reading headers only), logs its progress, remembers the last folder done
  (a restart resumes there) and finally marks the index migrated, so it never runs again.
  Until then, a lookup the index cannot answer also tries the legacy path.
- **Reconciliation.** Every `reconcile_interval`, a pass over the 65,536 fan-out folders,
  `dirs_per_step` at a time: index rows whose file is gone are dropped; files the index does
  not know are removed (an interrupted write, a failed unlink) or, when named like a legacy
  entry, adopted. Files younger than `stray_grace` are left alone: they may be writes whose
  index row is about to be committed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from voicecache.cache.tiers.disk import files
from voicecache.cache.tiers.disk.store import DiskStore, check_id
from voicecache.errors import StorageError
from voicecache.model import EntryMeta

log = logging.getLogger(__name__)

_FOLDERS = 256 * 256
_LEASE = "maintainer"
_PROGRESS_EVERY = 5.0  # seconds between migration progress lines

Found = tuple[str, str, int, EntryMeta, float]  # what `DiskStore.adopt` takes


@dataclass(frozen=True, slots=True)
class DiskMaintenance:
    """Timing of a disk tier's background work (seconds unless noted)."""

    background: bool = True  # run the maintainer thread (tests call the steps themselves)
    tick: float = 2.0  # between the maintainer's wake-ups (it also flushes hit times then)
    reconcile_interval: float = 3600.0  # between the starts of two reconciliation passes
    reconcile_delay: float = 60.0  # none in the first seconds after start-up
    stray_grace: float = 300.0  # unknown files younger than this may be writes in flight
    dirs_per_step: int = 64  # reconciliation folders per step (of 65,536)
    pause: float = 0.02  # between steps
    lease: float = 30.0  # how long the maintainer lease lasts without renewal


def inspect_found(store: DiskStore, directory: str, name: str) -> Found | None:
    """A file the index does not know, read for adoption; unreadable files are removed."""
    rel = f"{directory}/{name}"
    path = store.root / rel
    try:
        meta, stat = files.read_file_header(path)
    except FileNotFoundError:
        return None
    except (OSError, StorageError) as exc:
        log.info("disk tier: removing unreadable file %s: %s", rel, exc)
        files.remove(store.root, rel)
        return None
    # A legacy file is named by its id; a value file's id is its key and format.
    entry_id = f"{meta.key}.{meta.format}" if files.is_value_name(name) else name
    try:
        check_id(entry_id)
    except StorageError:
        files.remove(store.root, rel)
        return None
    return entry_id, rel, stat.st_size, meta, stat.st_atime


class Migration:
    """Adopts the pre-index layout, one folder per step."""

    def __init__(self, store: DiskStore, config: DiskMaintenance) -> None:
        self.store = store
        self.config = config
        self.adopted = 0
        self._lock = threading.Lock()
        self._todo: list[str] | None = None
        self._total = 0
        self._started = 0.0
        self._logged = 0.0

    def step(self) -> bool:
        """Adopt one folder; True once the whole directory is migrated."""
        with self._lock:  # the maintainer thread, and a purge that cannot wait for it
            return self._step()

    def _step(self) -> bool:
        if self.store.migrated or self.store.refresh_migrated():
            return True
        if self._todo is None:
            folders = self._folders()
            done = str(self.store.index.get_state("migrate_cursor", ""))
            self._todo = [folder for folder in folders if folder > done]
            self._total, self._started = len(folders), time.monotonic()
            self._logged = self._started
            log.info(
                "disk tier %s: migrating entries into the index in the background "
                "(%d folders, %d left)",
                self.store.root,
                self._total,
                len(self._todo),
            )
        if not self._todo:
            self._finish()
            return True
        folder = self._todo.pop(0)
        self._adopt_folder(folder)
        with self.store.index.write() as tx:
            self.store.index.set_state(tx, "migrate_cursor", folder)
        if time.monotonic() - self._logged >= _PROGRESS_EVERY:
            self._logged = time.monotonic()
            log.info(
                "disk tier %s: migration %d/%d folders, %d entries adopted",
                self.store.root,
                self._total - len(self._todo),
                self._total,
                self.adopted,
            )
        return False

    def _folders(self) -> list[str]:
        found: list[str] = []
        for top in _subdirs(self.store.root):
            found.extend(f"{top}/{sub}" for sub in _subdirs(self.store.root / top))
        return sorted(found)

    def _adopt_folder(self, folder: str) -> None:
        now = time.time()
        batch: list[Found] = []
        for item in _files(self.store.root / folder):
            name = item.name
            if name.startswith(files.TEMP_PREFIX) or files.is_value_name(name):
                # Temp files and young value files may belong to writes in flight.
                if _age(item, now) < self.config.stray_grace:
                    continue
                if name.startswith(files.TEMP_PREFIX):
                    files.remove(self.store.root, f"{folder}/{name}")
                    continue
            if self.store.index.has_filename(f"{folder}/{name}"):
                continue
            found = inspect_found(self.store, folder, name)
            if found is not None:
                batch.append(found)
        if batch:
            self.adopted += self.store.adopt(batch)

    def _finish(self) -> None:
        with self.store.index.write() as tx:
            self.store.index.set_state(tx, "migrated", 1)
            self.store.index.set_state(tx, "reconciled_at", time.time())
            tx.execute("DELETE FROM state WHERE name = 'migrate_cursor'")
        self.store.migrated = True
        log.info(
            "disk tier %s: migration done: %d entries adopted in %.1f s",
            self.store.root,
            self.adopted,
            time.monotonic() - self._started,
        )


class Reconciler:
    """Brings the index and the files back in line, `dirs_per_step` folders per step."""

    def __init__(self, store: DiskStore, config: DiskMaintenance) -> None:
        self.store = store
        self.config = config
        self.rows_dropped = 0  # rows whose file was gone
        self.files_removed = 0  # files no row named
        self.files_adopted = 0  # legacy-named files adopted
        self.passes = 0
        self._position: int | None = None
        self._fixed_at_start = 0

    def due(self, now: float) -> bool:
        last = float(self.store.index.get_state("reconciled_at", 0.0) or 0.0)
        return now - last >= self.config.reconcile_interval

    def step(self) -> bool:
        """Reconcile the next folders; True when that completes a pass."""
        index = self.store.index
        if self._position is None:
            self._position = int(index.get_state("reconcile_position", 0) or 0)
            self._fixed_at_start = self.fixed
        end = min(self._position + max(1, self.config.dirs_per_step), _FOLDERS)
        for number in range(self._position, end):
            self._reconcile(f"{number >> 8:02x}/{number & 255:02x}")
        self._position = end
        with index.write() as tx:
            if end < _FOLDERS:
                index.set_state(tx, "reconcile_position", end)
                return False
            index.set_state(tx, "reconcile_position", 0)
            index.set_state(tx, "reconciled_at", time.time())
        self._position = None
        self.passes += 1
        if self.fixed > self._fixed_at_start:
            log.info(
                "disk tier %s: reconciled: %d index rows without a file dropped, %d unknown "
                "files removed, %d adopted (since start-up)",
                self.store.root,
                self.rows_dropped,
                self.files_removed,
                self.files_adopted,
            )
        return True

    @property
    def fixed(self) -> int:
        return self.rows_dropped + self.files_removed + self.files_adopted

    def _reconcile(self, folder: str) -> None:
        store = self.store
        # Rows first, then the listing: a row committed before the query has its file written
        # already, so a file missing from the later listing really is gone.
        rows = store.index.rows_in_dir(folder)
        present = {item.name: item for item in _files(store.root / folder)}
        known = set()
        for entry_id, filename in rows:
            name = filename.rpartition("/")[2]
            known.add(name)
            if name not in present and store.forget_lost(entry_id, filename):
                self.rows_dropped += 1
        now = time.time()
        adopt: list[Found] = []
        for name, item in present.items():
            if name in known or _age(item, now) < self.config.stray_grace:
                continue
            rel = f"{folder}/{name}"
            if name.startswith(files.TEMP_PREFIX):
                files.remove(store.root, rel)
                self.files_removed += 1
            elif files.is_value_name(name):
                # A file from an interrupted write, or one whose unlink failed after its row
                # was deleted (a purge): never resurrect it.
                if not store.index.has_filename(rel):
                    files.remove(store.root, rel)
                    self.files_removed += 1
            elif not store.index.has_filename(rel):
                found = inspect_found(store, folder, name)
                if found is not None:
                    adopt.append(found)
        if adopt:
            self.files_adopted += store.adopt(adopt)


class Maintainer:
    """The daemon thread that migrates, reconciles and flushes hit times for one tier."""

    def __init__(self, store: DiskStore, config: DiskMaintenance) -> None:
        self.store = store
        self.config = config
        self.migration = Migration(store, config)
        self.reconciler = Reconciler(store, config)
        self.holder = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._leased = False

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._started = time.monotonic()
            self._thread = threading.Thread(
                target=self._run, name="voicecache-disk-maintainer", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.config.tick):
            try:
                self.work()
            except Exception as exc:  # never let one failure end the upkeep
                log.warning("disk tier %s: background upkeep failed: %s", self.store.root, exc)

    def work(self) -> None:
        """One wake-up: flush hit times, then migrate or reconcile if it is time to."""
        self.store.flush_touches()
        if not self.store.migrated:
            if not self.store.refresh_migrated() and self._lease():
                self._steps(self.migration.step)
            return
        if time.monotonic() - self._started < self.config.reconcile_delay:
            return
        if self.reconciler.due(time.time()) and self._lease():
            self._steps(self.reconciler.step)

    def _steps(self, step: Callable[[], bool]) -> None:
        renewed = time.monotonic()
        while not self._stop.is_set():
            if step():
                return
            if time.monotonic() - renewed > self.config.lease / 3:
                if not self._lease():
                    return
                renewed = time.monotonic()
                self.store.flush_touches()
            self._stop.wait(self.config.pause)

    def _lease(self) -> bool:
        taken = self.store.index.take_lease(_LEASE, self.holder, time.time(), self.config.lease)
        self._leased = self._leased or taken
        return taken

    def release(self) -> None:
        """Give the lease up (at shutdown), so another process need not wait for it to lapse."""
        if self._leased:
            self._leased = False
            self.store.index.release_lease(_LEASE, self.holder)


def _subdirs(path: Path) -> list[str]:
    try:
        with os.scandir(path) as items:
            return sorted(
                item.name
                for item in items
                if not item.name.startswith(".") and item.is_dir(follow_symlinks=False)
            )
    except (FileNotFoundError, NotADirectoryError):
        return []


def _files(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as items:
            return [item for item in items if item.is_file(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _age(item: os.DirEntry[str], now: float) -> float:
    try:
        return now - item.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return 0.0
