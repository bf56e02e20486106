"""Which process has a run open, and whether it still runs (no mlflow here): how a run left RUNNING by
a process that died (SIGKILL, out of memory, power loss) is told from one still training."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path


def process_identity(pid: int | None = None) -> str:
    """Returns "host:boot:pid:start" for a process (this one by default): enough to tell later, on the same
    host, whether that very process still runs - a reboot changes the boot id, a reused pid its start time."""
    import os

    pid = os.getpid() if pid is None else pid
    boot = start = "?"
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    with contextlib.suppress(OSError, IndexError):
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]  # field 22: start time
    return f"{socket.gethostname()}:{boot}:{pid}:{start}"


def process_alive(identity: str) -> bool | None:
    """Returns whether the process an identity names still runs: None when it ran on another host (or the
    identity is unreadable), since only the host itself can tell."""
    import os

    try:
        host, boot, pid, start = identity.rsplit(":", 3)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    current_boot, current_start = process_identity(int(pid)).rsplit(":", 3)[1::2]
    if boot != "?" and current_boot != "?" and boot != current_boot:
        return False  # the machine rebooted since
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    return start == "?" or current_start == start
