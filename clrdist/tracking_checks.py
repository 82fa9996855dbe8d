"""Preflight checks of a tracking store (``clrdist.tracking.check_uri``): the scheme, a sqlite
file that is a database, not locked right now and writable, a server that answers its health
endpoint; URI resolution and the error type. No mlflow import here (``clrdist.tracking``
adds the MLflow probe in ``check_uri``)."""

from __future__ import annotations

import os
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

from clrdist.errors import ClrdistError


class TrackingError(ClrdistError):
    """The tracking store cannot be used (bad URI, unknown run)."""


# Tracking URI schemes MLflow 3 can log runs to (database dialects may carry a driver: mysql+pymysql)
_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def resolve_uri(uri: str, create: bool = True) -> str:
    """Absolute sqlite URI (creating its folder unless ``create`` is False); other URIs unchanged.

    ``$MLFLOW_TRACKING_URI``, when set, replaces ``uri``: a cluster job's tracking server
    (``slurm/ray_cluster.sh --mlflow`` exports it) takes every run of the job.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or uri
    if uri.startswith("sqlite:///"):
        raw = uri[len("sqlite:///"):]
        path = Path(raw) if raw.startswith("/") else Path.cwd() / raw
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.resolve()}"
    if "://" not in uri or uri.startswith("file:"):
        raise TrackingError(
            f"tracking URI {uri!r}: MLflow 3 needs a database or server URI, "
            "e.g. sqlite:///mlflow.db or http://127.0.0.1:5000"
        )
    return uri


def check_store(uri: str, timeout: float = 5.0, *, create: bool = True) -> str:
    """Resolve ``uri`` and prove the tracking store answers, within ``timeout`` seconds for servers.

    Raises TrackingError (one line, naming the URI) for an unsupported scheme, a file that is not
    a database, a database locked by another process right now, a store this process cannot
    write, a database MLflow cannot open, or a server that does not answer. ``create=False``
    (``clrdist eval``, ``--resume``): a sqlite store must exist already; a typo creates nothing.
    """
    if not create and uri.startswith("sqlite:///") and not os.environ.get("MLFLOW_TRACKING_URI"):
        path = Path(resolve_uri(uri, create=False)[len("sqlite:///"):])
        if not path.is_file():
            raise TrackingError(f"tracking URI {uri!r}: no such database ({path}); check the URI "
                                "(nothing was created)")
    uri = resolve_uri(uri, create=create)
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in _SCHEMES:
        raise TrackingError(f"tracking URI {uri!r}: unsupported scheme {scheme!r}; use sqlite:///PATH "
                            f"or http://HOST:PORT (MLflow also takes {', '.join(_SCHEMES[3:])})")
    if scheme in ("http", "https"):
        _check_server(uri, timeout)
        return uri
    if scheme == "sqlite":
        _check_sqlite_file(uri)
    return uri


def _check_sqlite_file(uri: str, wait: float = 10.0) -> None:
    """The database file (or, for a new one, its folder) is writable, and a write transaction can
    start within ``wait`` seconds: tells "locked by another process now" from "not a database"."""
    path = Path(uri[len("sqlite:///"):])
    if not path.exists():
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise TrackingError(f"{path}: cannot create the tracking database: its folder "
                                f"{path.parent} is not writable")
        return  # MLflow creates it
    for what, target in (("database", path), ("folder (sqlite writes its journal there)", path.parent)):
        if not os.access(target, os.W_OK):
            raise TrackingError(f"{path}: the tracking store is not writable (read-only {what} "
                                f"{target}); point tracking.uri at a writable place")
    try:
        con = sqlite3.connect(f"file:{path}", uri=True, timeout=wait)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            con.execute("BEGIN IMMEDIATE")  # the write lock a metric insert needs; nothing written
            con.rollback()
        finally:
            con.close()
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            raise TrackingError(f"{path}: the tracking database is locked by another process "
                                f"right now (waited {wait:g} s); it is a valid database: retry "
                                "when that process lets go") from None
        if "readonly" in str(e).replace(" ", "").replace("-", ""):
            raise TrackingError(f"{path}: the tracking store is not writable ({e}); point "
                                "tracking.uri at a writable place") from None
        raise TrackingError(f"{path}: not a usable MLflow database ({e}); point tracking.uri at "
                            "another file or move this one away") from None
    except sqlite3.Error as e:  # DatabaseError: file is not a database
        raise TrackingError(f"{path}: not a usable MLflow database ({e}); point tracking.uri at "
                            "another file or move this one away") from None


def _check_server(uri: str, timeout: float) -> None:
    """GET {uri}/health: an MLflow server answers 200 (401 / 403: there, behind authentication)."""
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 (scheme checked above)
            return
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            return
        raise TrackingError(f"tracking URI {uri!r}: does not answer like an MLflow server "
                            f"(HTTP {e.code} {e.reason} for {url}); fix tracking.uri") from None
    except (urllib.error.URLError, OSError) as e:
        reason = str(getattr(e, "reason", None) or e)
    raise TrackingError(f"tracking URI {uri!r}: server not reachable within {timeout:g} s "
                        f"({reason}); start it (mlflow server --host 127.0.0.1) or fix tracking.uri")
