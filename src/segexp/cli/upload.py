"""`segexp upload DIR`: sends to the tracking store what runs logged while it was unreachable. Every run
keeps a journal of what it logs (tracking_spool/ in its directory); DIR may be a run, a sweep or any
folder above them, and each journal below it with records the store has not taken is sent, in order."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from segexp.errors import ConfigError


def journals(root: Path) -> list[Path]:
    """Returns the spool folders (holding a journal) at or below root."""
    from segexp.tracking.spool import JOURNAL

    return sorted(path.parent for path in root.rglob(JOURNAL))


def task(cfg: DictConfig) -> int:
    """Uploads every pending journal below cfg.run to its run's store (or to cfg.uri); returns the number of
    records sent. A store that is still unreachable stops it with one line; nothing is lost."""
    from segexp.models.loading import load_model
    from segexp.tracking.spool import unsent
    from segexp.tracking.spool import upload as upload_journal
    from segexp.tracking.store import check_store

    root = Path(cfg.run)
    if not root.exists():
        raise ConfigError(f"{root}: no such run or sweep directory")
    pending = [(folder, header) for folder in journals(root)
               for header, left in [unsent(folder, say=lambda _: None)] if left]  # upload says it once
    if not pending:
        print(f"[segexp] nothing to upload below {root}: every run's store has all it logged", flush=True)
        return 0
    sent = 0
    for folder, header in pending:
        check_store(cfg.uri or header["uri"])  # one line if the store is still away; nothing is lost
        sent += upload_journal(folder, load_model, cfg.uri)
    return sent
