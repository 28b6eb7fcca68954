"""Process checks shared by the tests that make sure subprocesses do not outlive their parent."""

from pathlib import Path

#: the checks read /proc: Linux only
HAS_PROC = Path("/proc/self/stat").exists()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
