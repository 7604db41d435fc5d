"""Private files and directories for secrets and state (the eIM store, the IPA state file, keys, PSK files).

Created ``0600`` (files) and ``0700`` (directories) whatever the process umask: the mode is set explicitly after
creation, because ``open``/``mkdir`` only apply it through the umask. Directories that already exist are left as
the administrator made them (a systemd ``StateDirectory=`` is ``0700`` already); existing files of ours that other
users can read are tightened and the caller is told, so it can say so in its log.
"""

from __future__ import annotations

import os
import stat
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
