"""Getting the database ready at start-up, with each way that can fail said in one line that names the cause and
the fix (`DatabaseProblem`): a URL this package cannot use, a missing driver, a SQLite file that cannot be
created or is locked by another process, a schema newer than this version knows, a server that does not answer.
No line carries the URL's password."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
from pathlib import Path

from alembic.util.exc import CommandError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from flows.store.database import sqlite_file
from flows.store.migrate import upgrade

log = logging.getLogger(__name__)

SQLITE, POSTGRESQL = "sqlite+aiosqlite", "postgresql+asyncpg"
FORMS = f"{SQLITE}:///PATH or {POSTGRESQL}://USER:PASSWORD@HOST/DATABASE"
LOCK_WAIT_SECONDS = 5.0  # how long to wait for another process's write lock before giving up
_PASSWORD_IN_URL = re.compile(r"(://[^\s:/@]+:)[^\s@/]+@")
_UNKNOWN_REVISION = re.compile(r"Can't locate revision identified by '([^']+)'")


class DatabaseProblem(Exception):
    """The database cannot be used; the message is one line for the operator, without the URL's password."""


def masked(text: str) -> str:
    """`text` with the password of any URL in it replaced by ***."""
    return _PASSWORD_IN_URL.sub(r"\1***@", text)


def url_problem(url: str) -> str | None:
    """Why DATABASE_URL names no database this package can use (with the form that would do), or None."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return f"is not a database URL; use {FORMS}"
    if parsed.drivername in (SQLITE, POSTGRESQL):
        return None
    backend = parsed.get_backend_name()
    right = {"sqlite": SQLITE, "postgresql": POSTGRESQL}.get(backend)
    if right is None:
        return f"{parsed.drivername}:// is not supported; use {FORMS}"
    fixed = parsed.set(drivername=right).render_as_string(hide_password=True)
    return f"{parsed.drivername}:// is not supported: the bot needs the asyncio driver, {right}:// (here: {fixed})"


async def make_ready(url: str) -> None:
    """Check that the database can be used and bring it up to date; DatabaseProblem says why it cannot."""
    if problem := url_problem(url):
        raise DatabaseProblem(f"DATABASE_URL {problem}")
    try:
        path = sqlite_file(url)
        if path is not None:
            await asyncio.to_thread(take_write_lock, path)
        await upgrade(url)
    except Exception as error:
        log.debug("the database could not be made ready", exc_info=True)
        raise DatabaseProblem(explain(url, error)) from None


def take_write_lock(path: Path) -> None:
    """Create the SQLite file (and folder) if need be, and take and release its write lock: the first write of a
    desk would otherwise wait for another process's lock with no word of why."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=LOCK_WAIT_SECONDS, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
    finally:
        connection.close()


def explain(url: str, error: Exception) -> str:
    """One line for the operator on why the database at `url` could not be opened or migrated."""
    path = sqlite_file(url)
    if isinstance(error, ImportError):
        if error.name == "asyncpg":
            return "the PostgreSQL driver is not installed: pip install 'recovery-bot[postgres]'"
        return f"a database driver is not installed: {error}"
    if isinstance(error, CommandError) and (unknown := _UNKNOWN_REVISION.search(str(error))):
        return (f"the database is at schema revision {unknown.group(1)}, which this version of recovery-bot does "
                "not know (a newer version migrated it): upgrade recovery-bot, or use another DATABASE_URL")
    if path is not None and isinstance(error, OSError) and error.filename is not None:
        why = (f"{error.filename} is not a folder" if isinstance(error, FileExistsError | NotADirectoryError)
               else f"{error.filename}: {error.strerror}")
        return f"cannot create the SQLite database {path}: {why}; set DATABASE_URL to a file in a folder you can write"
    lines = str(error.orig if isinstance(error, DBAPIError) else error).strip().splitlines()
    reason = lines[0] if lines else type(error).__name__  # asyncpg's connect timeout is a TimeoutError with no text
    if path is not None:
        return _sqlite_problem(path, reason)
    where = make_url(url).render_as_string(hide_password=True)
    return masked(f"cannot open the database {where}: {reason}; check that the server is up and DATABASE_URL is right")


def _read_only(path: Path) -> bool:
    """Whether the file's folder is on a read-only volume, or not writable by this user (SQLite then says only
    that it is "unable to open database file": it cannot make its -wal and -shm files)."""
    folder = path.parent
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY) or not os.access(folder, os.W_OK)
    except OSError:
        return False


def _sqlite_problem(path: Path, reason: str) -> str:
    if "locked" in reason or "busy" in reason:
        return (f"the database {path} is in use by another process (it holds the write lock): stop that process, "
                "or wait for it, and start again")
    if "readonly" in reason or "read-only" in reason or _read_only(path):
        return f"the SQLite database {path} is read-only: make the file and its folder writable for this user"
    return f"cannot open the SQLite database {path}: {reason}; set DATABASE_URL to a file this user can write"
