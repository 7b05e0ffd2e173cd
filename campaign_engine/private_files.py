"""Local state only its owner reads: directories 0700, files 0600.

The state dir holds the SQLite store (API-key hashes, campaigns, webhook settings, the delivery
ledger) with its WAL and shared-memory files, the outbox's `.eml` files (every message as sent,
unsubscribe tokens included), the Temporal dev server's database and the generated secrets. On a
machine with other local users none of it is theirs to read, whatever the umask says: every
directory the engine makes is created 0700 and every file 0600, and at start the state dir and
the files an earlier version left readable are narrowed (`secure_state_dir`).

Directories the operator made (an `OUTBOX_DIR` elsewhere, the directory of a SQLite URL) keep
their mode: they may be shared on purpose; the files the engine writes into them are 0600 still.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
"""What SQLite keeps beside a database file (write-ahead log, its index, a rollback journal).
SQLite creates them with the database file's own mode, so a 0600 database makes 0600 ones."""


def make_private_dir(path: Path) -> Path:
    """Creates `path` and any missing parents, each new one mode 0700 (an existing one is left
    as it is); returns `path`."""
    missing: list[Path] = []
    current = Path(path)
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIRECTORY_MODE)
        except FileExistsError:
            continue  # made meanwhile by another process; it made it 0700 too
        # mkdir's mode is narrowed by the umask, never widened: chmod makes it exactly 0700.
        os.chmod(directory, DIRECTORY_MODE)
    return path


def narrow(path: Path, mode: int) -> bool:
    """Takes group and other permissions off `path` (to `mode`) when it exists, belongs to this
    user and has any; True when it changed something."""
    try:
        status = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    if status.st_uid != os.geteuid() or not status.st_mode & 0o077:
        return False
    os.chmod(path, mode)
    return True


def open_private(path: Path, flags: int) -> int:
    """`os.open(path, flags | O_CREAT, 0600)`: a file descriptor of a file made owner-only."""
    return os.open(path, flags | os.O_CREAT, FILE_MODE)


def write_private(path: Path, data: bytes) -> None:
    """Writes `data` to `path`, creating or truncating it; a new file is 0600."""
    with os.fdopen(open_private(path, os.O_WRONLY | os.O_TRUNC), "wb") as file:
        file.write(data)


def prepare_sqlite_file(path: Path) -> None:
    """Before SQLite opens `path`: its directory exists (new ones 0700), the database file exists
    with mode 0600 (so SQLite gives its WAL and shared-memory files 0600 as well), and a database
    or side file an earlier version left readable by others is narrowed to 0600."""
    make_private_dir(path.parent)
    # Only a file that does not exist yet is opened here: closing a descriptor of a database
    # this process already has open would drop SQLite's POSIX locks on it (fcntl locks belong
    # to the process, and any close releases them).
    if not path.exists():
        # FileExistsError: made meanwhile by another process, 0600 as well.
        with contextlib.suppress(FileExistsError):
            os.close(open_private(path, os.O_RDWR | os.O_EXCL))
    for candidate in (path, *(path.with_name(path.name + end) for end in SQLITE_SIDE_FILES)):
        narrow(candidate, FILE_MODE)


def secure_state_dir(state_dir: Path, *, outbox_dir: Path | None = None) -> None:
    """At start: a state dir an earlier version left open (0755) is narrowed to 0700, and so is
    `outbox_dir` when given (the default outbox under it). One that does not exist yet is left
    to whatever first writes there (`make_private_dir`: 0700)."""
    narrow(state_dir, DIRECTORY_MODE)
    if outbox_dir is not None and outbox_dir.is_dir():
        narrow(outbox_dir, DIRECTORY_MODE)
