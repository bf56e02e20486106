"""`segexp orphans`: ends the store's runs left RUNNING by a process that died (SIGKILL, out of memory,
power loss) - as every segexp command that opens the store also does - and lists the RUNNING runs it
cannot judge (made on another host, or by an older segexp without a process tag)."""

from __future__ import annotations

from omegaconf import DictConfig


def task(cfg: DictConfig) -> tuple[list, list]:
    from segexp.tracking.store import end_orphaned_runs, existing_store

    uri = existing_store(cfg.tracking.uri)
    ended, unknown = end_orphaned_runs(uri)
    for run in ended:
        print(f"[segexp] ended as KILLED: {run.name} ({run.run_id}); its process {run.process} is gone", flush=True)
    for run in unknown:
        where = run.process.split(":", 1)[0] or "an unknown host (no process tag)"
        print(f"[segexp] still RUNNING, not judged from here: {run.name} ({run.run_id}) on {where}",
              flush=True)
    print(f"[segexp] {len(ended)} orphaned run(s) ended, {len(unknown)} RUNNING run(s) of other hosts left alone "
          f"in {uri}", flush=True)
    return ended, unknown
