"""Event-driven landing: a small watcher that emits ``conure.landing.ready`` when a folder is complete.

It polls the landing folder's files with ``stat`` only (no reading, no hashing) and, for each task
folder that became complete (``_SUCCESS`` written last, see ``data_contracts.landing``) or changed
since, emits one Prefect event whose resource is that folder. The ``landing-watch`` deployment's
trigger in ``deployments/prefect.yaml`` starts a sweep on that event, so a folder is learned seconds
after its marker lands instead of at the next 5-minute tick (the interval sweep stays as the
safety net, and the sweep itself decides what is new).

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.landing_events [--landing DIR] [--interval 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from data_contracts.landing import MARKER, readiness, signature, task_folders
from tasks.errors import PipelineError
from tasks.settings import Layout, configure_process

EVENT = "conure.landing.ready"
RESOURCE_PREFIX = "conure.landing."  # + the folder's absolute path; the trigger matches "conure.landing.*"


def resource_of(folder: Path) -> dict:
    """The event's resource: the landed folder (its id is what a trigger matches)."""
    folder = Path(folder).resolve()
    return {"prefect.resource.id": RESOURCE_PREFIX + str(folder), "prefect.resource.name": folder.name,
            "conure.folder": str(folder), "conure.landing": str(folder.parent)}


def newly_ready(landing: Path, seen: dict) -> list[tuple[Path, list]]:
    """(folder, signature) of complete folders not yet announced with that signature."""
    out = []
    for folder in task_folders(landing):
        sig = signature(folder)
        if readiness(folder, sig) is None and seen.get(str(folder.resolve())) != sig:
            out.append((folder, sig))
    return out


def emit_ready(landing: Path, seen: dict) -> list:
    """Emit one event per newly complete folder; ``seen`` (folder -> signature) is updated."""
    from prefect.events import emit_event

    events = []
    for folder, sig in newly_ready(landing, seen):
        marker = next(e for e in sig if e[0] == MARKER)
        event = emit_event(event=EVENT, resource=resource_of(folder),
                           payload={"landing": str(Path(landing).resolve()), "folder": str(folder.resolve()),
                                    "files": [e[0] for e in sig], "marker_mtime_ns": marker[2]})
        seen[str(folder.resolve())] = sig
        events.append(event)
    return events


def watch(landing: Path, interval: float = 2.0, rounds: int | None = None) -> int:
    """Poll ``landing`` every ``interval`` s (``rounds`` times, or until Ctrl-C); returns events emitted.

    Every complete folder is announced once at start-up: a sweep skips those already learned.
    """
    from prefect.events.worker import EventsWorker

    if not os.environ.get("PREFECT_API_URL"):
        raise PipelineError("the landing watcher sends events to a Prefect server: set PREFECT_API_URL to the "
                            "server that holds the landing-watch deployment (`conure serve` prints it).")
    landing = Path(landing)
    landing.mkdir(parents=True, exist_ok=True)
    seen: dict = {}
    sent, done = 0, 0
    try:
        while rounds is None or done < rounds:
            for event in emit_ready(landing, seen):
                sent += 1
                print(f"{EVENT}: {event.resource['conure.folder'] if event else '?'}", flush=True)
            done += 1
            if rounds is None or done < rounds:
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        EventsWorker.drain_all()  # events are sent by a background worker: flush before exiting
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.landing_events", description=__doc__.split("\n\n")[0])
    parser.add_argument("--landing", type=Path, default=None, help="landing folder (default $CONURE_HOME/landing)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls (stat calls only)")
    parser.add_argument("--rounds", type=int, default=None, help="stop after this many polls (default: never)")
    args = parser.parse_args(argv)
    configure_process()
    try:
        watch(args.landing or Layout().landing, args.interval, args.rounds)
    except PipelineError as exc:
        print(f"conure: error: {exc}", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
