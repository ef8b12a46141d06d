"""One deploy of a clone's HEAD in a process of its own, so a test can signal it:
``python -m tests.fault.deployer CLONE [STRATEGY] [BAKE]``. Progress goes to stdout; the exit
code is 0 (live), 1 (failed) or 130 (interrupted), as ``invoke deploy`` says."""

from __future__ import annotations

import sys
from pathlib import Path

from lab import config
from lab.errors import LabError, RunStopped
from lab.estate.state import State
from lab.ports.lab import Lab
from lab.progress import Progress
from lab.release import judge, pipeline


def main(argv: list[str]) -> int:
    clone, strategy = Path(argv[1]), argv[2] if len(argv) > 2 else "bluegreen"
    bake = float(argv[3]) if len(argv) > 3 else 0.0
    progress = Progress(out=sys.stdout)
    with Lab(State(config.load()).at(clone)) as lab:
        try:
            rec = pipeline.deploy(
                lab,
                progress,
                "app",
                "HEAD",
                strategy,
                (50, 100),
                4.0,
                judge.Thresholds(min_requests=20),
                bake=bake,
            )
        except RunStopped as exc:
            print(f"STOPPED {exc}", flush=True)
            return 130
        except LabError as exc:
            print(f"FAILED {exc}", flush=True)
            return 1
    print(f"LIVE {rec.release}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
