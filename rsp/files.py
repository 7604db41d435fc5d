"""Private files and directories for secrets and state (the eIM store, the IPA state file, keys, PSK files).

Created ``0600`` (files) and ``0700`` (directories) whatever the process umask: the mode is set explicitly after
creation, because ``open``/``mkdir`` only apply it through the umask. Directories that already exist are left as
the administrator made them (a systemd ``StateDirectory=`` is ``0700`` already); existing files of ours that other
users can read are tightened and the caller is told, so it can say so in its log.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path


def private_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as a directory; created ``0700`` (missing parents too) when it does not exist."""
    p = Path(path)
    if p.is_dir():
        return p
    missing = []
    cur = p
    while not cur.exists() and cur != cur.parent:
        missing.append(cur)
        cur = cur.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)
    return p


def private_file(path: str | os.PathLike[str]) -> bool:
    """Make sure ``path`` exists with mode ``0600`` (created empty if missing, in a private directory).

    Returns ``True`` when an existing file was readable or writable by others and has been tightened."""
    p = Path(path)
    private_dir(p.parent)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            os.fchmod(fd, mode & 0o700 or 0o600)
            return True
        return False
    finally:
        os.close(fd)


def tighten_stdout() -> bool:
    """When standard output is a regular file of ours (``cmd > device.psk``), make it ``0600``: the shell created
    it with the umask (often ``0644``) before the secret was written. ``True`` if it was changed."""
    try:
        st = os.fstat(1)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or not stat.S_IMODE(st.st_mode) & 0o077:
        return False
    try:
        os.fchmod(1, 0o600)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[None]:
    """An exclusive lock on ``<path>.lock`` (0600), so that two editors of one key file (``eim psk``, ``eim
    operator``, ``eim device-secret``) do not lose each other's change. Raises ``OSError``."""
    fd = os.open(Path(f"{path}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def replace_private(path: str | os.PathLike[str], text: str, *, keep_owner: bool = False) -> list[str]:
    """Replace ``path`` atomically with ``text``: a temporary file in the same directory, mode 0600, fsync'ed,
    renamed over it, the directory fsync'ed. ``keep_owner``: give it the old file's owner and group (root editing
    a file the service reads); a warning is returned when that is not allowed. Raises ``OSError``; the old file
    is then untouched."""
    target = Path(path)
    warnings: list[str] = []
    old = None
    if keep_owner:
        with contextlib.suppress(FileNotFoundError):
            old = target.stat()
    import tempfile  # here: it imports shutil, random and hashlib, which a device daemon otherwise never loads

    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), stat.S_IRUSR | stat.S_IWUSR)
            if old is not None and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fh.fileno(), old.st_uid, old.st_gid)
                except OSError:
                    warnings.append(
                        f"{target} now belongs to uid {os.geteuid()} (was {old.st_uid}): make sure the eIM can still"
                        " read it"
                    )
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a crash only once the directory is synced
        dfd = os.open(target.parent or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return warnings
