"""Where a sweep's study lives, and the one lock its workers take turns with.

Three kinds of storage hold an Optuna study that any number of `lab sweep` workers share:

- a SQLite file (the default, `RUNS/NAME.sweep/optuna.db`): workers on one machine;
- a database server, `postgresql://...` or `mysql://...` (Optuna's RDB storage, the RL Zoo
  convention): workers on many machines;
- a journal file, `journal:PATH` or a plain path (Optuna's JournalStorage): many machines
  that share a file system but no database server.

Workers claim trials one at a time under `StudyLock` (an flock beside a file, an advisory
lock on a server), so a trial number, a grid point or a trial left behind by a dead worker
is taken by exactly one of them, and two workers creating a fresh server database's tables at
the same moment cannot collide. A password never leaves this module in text: `shown` masks
it (`postgresql://lab:***@host/db`), and a password given as `LAB_STORAGE_PASSWORD` instead
of in the URL keeps it out of command lines and job scripts.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.api import LabError
from lab.files import make_folder, writing

if TYPE_CHECKING:
    import optuna

PASSWORD_VAR = "LAB_STORAGE_PASSWORD"  # a server's password, kept out of URLs on command lines
JOURNAL = "journal:"
SERVER_SCHEMES = {"postgresql": "psycopg", "mysql": "pymysql"}  # scheme -> the driver to install
LOCK_ROUND_S = 3600  # MySQL's GET_LOCK waits this long, then again (0: another worker still holds it)
STORAGE_HELP = "pass sqlite:///FILE, postgresql://USER@HOST/DB, mysql://USER@HOST/DB or journal:PATH"


class StorageKind(Enum):
    SQLITE = "sqlite"
    SERVER = "server"
    JOURNAL = "journal"


@dataclass(frozen=True)
class Storage:
    """A study's storage as the user named it; `url` may hold a password, `shown` never does."""

    url: str
    kind: StorageKind

    @classmethod
    def parse(cls, text: str) -> Storage:
        if text.startswith(JOURNAL):
            path = text.removeprefix(JOURNAL)
            if not path:
                raise LabError(f"--storage '{text}' names no file; {STORAGE_HELP}")
            return cls(f"{JOURNAL}{Path(path).resolve()}", StorageKind.JOURNAL)
        if "://" not in text:  # a plain path: a journal file on a shared file system
            return cls(f"{JOURNAL}{Path(text).resolve()}", StorageKind.JOURNAL)
        scheme = text.split("://", 1)[0].split("+", 1)[0].lower()
        if scheme == "sqlite":
            return cls(text, StorageKind.SQLITE)
        if scheme in SERVER_SCHEMES:
            return cls(text, StorageKind.SERVER)
        raise LabError(f"--storage '{shown_url(text)}' is not a storage the lab shares a sweep in; {STORAGE_HELP}")

    @classmethod
    def sqlite(cls, path: Path) -> Storage:
        return cls(f"sqlite:///{path.resolve()}", StorageKind.SQLITE)

    @property
    def shown(self) -> str:
        """The URL as printed and logged: any password masked."""
        return shown_url(self.url)

    @property
    def without_password(self) -> str:
        """The URL for another process's command line or environment; the password travels in
        `LAB_STORAGE_PASSWORD` (`environment`)."""
        return _credentials(self.url, lambda user, password: user)

    def environment(self) -> dict[str, str]:
        """What a worker or trial process needs beside `without_password` to connect."""
        if self.kind != StorageKind.SERVER:
            return {}
        from sqlalchemy.engine import make_url

        password = make_url(self.url).password or os.environ.get(PASSWORD_VAR)
        return {PASSWORD_VAR: str(password)} if password else {}

    @property
    def file(self) -> Path | None:
        """The SQLite or journal file (None for a server)."""
        if self.kind == StorageKind.JOURNAL:
            return Path(self.url.removeprefix(JOURNAL))
        if self.kind == StorageKind.SQLITE:
            return Path(self.url.split(":///", 1)[1])
        return None

    def sqlalchemy_url(self) -> str:
        """The server URL with its driver (psycopg 3 for postgresql://, as pip installs it) and the
        password from `LAB_STORAGE_PASSWORD` when the URL has none."""
        from sqlalchemy.engine import make_url

        url = make_url(self.url)
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        elif url.drivername == "mysql":
            url = url.set(drivername="mysql+pymysql")
        if url.password is None and os.environ.get(PASSWORD_VAR):
            url = url.set(password=os.environ[PASSWORD_VAR])
        return url.render_as_string(hide_password=False)

    def open(self) -> optuna.storages.BaseStorage:
        """Optuna's storage, its failures as one line naming the storage (never its password)."""
        import optuna

        try:
            if self.kind == StorageKind.JOURNAL:
                path = self.file
                assert path is not None
                with writing(path, "open the sweep's journal", "pass another --storage"):
                    backend = optuna.storages.journal.JournalFileBackend(
                        str(path), lock_obj=optuna.storages.journal.JournalFileOpenLock(str(path)))
                return optuna.storages.JournalStorage(backend)
            if self.kind == StorageKind.SQLITE:  # waits for a writer in another process rather than failing
                return optuna.storages.RDBStorage(self.url, engine_kwargs={"connect_args": {"timeout": 60}})
            return optuna.storages.RDBStorage(self.sqlalchemy_url(), engine_kwargs={"pool_pre_ping": True})
        except LabError:
            raise
        except Exception as exc:
            raise self.unreachable(exc) from None

    def unreachable(self, exc: BaseException) -> LabError:
        """One line for a storage that cannot be opened: the host, and the driver to install."""
        lines = str(exc).replace(self.url, self.shown).strip().splitlines()
        reason = lines[0][:200] if lines else type(exc).__name__
        if isinstance(exc, ModuleNotFoundError | ImportError):
            scheme = self.url.split("://", 1)[0].split("+", 1)[0]
            driver = SERVER_SCHEMES.get(scheme, exc.name or "its driver")
            return LabError(f"cannot open the sweep's study at {self.shown}: the {driver} driver is not installed; "
                            f"pip install {driver} (or pip install 'arcade-lab[cluster]')")
        return LabError(f"cannot open the sweep's study at {self.shown} ({reason}); check that the server runs "
                        f"and the host, port, user and database are right ({STORAGE_HELP})")

    def lock(self) -> StudyLock:
        return StudyLock(self)


def default_storage(sweep_name: str, runs_dir: Path) -> Storage:
    """A SQLite file in the sweep's folder, `RUNS/NAME.sweep/optuna.db`: workers on one machine."""
    folder = make_folder(runs_dir / f"{sweep_name}.sweep", "create the sweep folder",
                         "choose another --runs-dir (or --storage)")
    return Storage.sqlite(folder / "optuna.db")


def shown_url(url: str) -> str:
    """`url` with its password masked (`postgresql://lab:***@host/db`)."""
    return _credentials(url, lambda user, password: f"{user}:***" if password is not None else user)


def _credentials(url: str, write: Callable[[str, str | None], str]) -> str:
    """`url` with its `user[:password]` part rewritten by `write(user, password or None)`."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    authority, slash, path = rest.partition("/")
    credentials, at, host = authority.rpartition("@")
    if not at:
        return url
    user, colon, password = credentials.partition(":")
    return f"{scheme}://{write(user, password if colon else None)}@{host}{slash}{path}"


class StudyLock:
    """One worker at a time claims a trial: an flock on a file beside a SQLite or journal file
    (held by the kernel, dropped when a killed worker dies), or a server's advisory lock
    (`pg_advisory_lock`, MySQL's `GET_LOCK`) on a connection of its own, dropped when it closes."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._file: Any = None
        self._connection: Any = None
        self._engine: Any = None

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        path = self.storage.file
        if path is not None:
            lock_path = path.with_name(path.name + ".lab-lock")
            with writing(lock_path, "lock the sweep's study", "pass a --storage in a writable folder"):
                self._file = open(lock_path, "a")
            fcntl.flock(self._file, fcntl.LOCK_EX)
            return
        import sqlalchemy

        try:
            if self._engine is None:
                self._engine = sqlalchemy.create_engine(self.storage.sqlalchemy_url(), poolclass=sqlalchemy.pool.NullPool)
            self._connection = self._engine.connect()
            if self._engine.dialect.name == "postgresql":
                self._connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": self._key()})
            else:  # MySQL's -1 (wait forever) is refused by MariaDB (NULL, nothing locked): wait in rounds
                while True:
                    got = self._connection.execute(sqlalchemy.text("SELECT GET_LOCK(:name, :wait)"),
                                                   {"name": self._name(), "wait": LOCK_ROUND_S}).scalar()
                    if got == 1:
                        break
                    if got is None:
                        raise RuntimeError(f"the server refused GET_LOCK('{self._name()}')")
            self._connection.commit()
        except Exception as exc:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            raise self.storage.unreachable(exc) from None

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._connection is not None:
            try:  # closing the connection drops the lock too; unlock first so a pooled one never keeps it
                import sqlalchemy

                if self._engine.dialect.name == "postgresql":
                    self._connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": self._key()})
                else:
                    self._connection.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:name)"), {"name": self._name()})
            finally:
                self._connection.close()
                self._connection = None

    def _name(self) -> str:
        """One lock per database, not per study: the first workers on a fresh database create its
        tables, whichever study they are for."""
        return "lab-sweeps"

    def _key(self) -> int:
        """A signed 64-bit key (`pg_advisory_lock` takes a bigint)."""
        return int.from_bytes(hashlib.sha256(self._name().encode()).digest()[:8], "big", signed=True)
