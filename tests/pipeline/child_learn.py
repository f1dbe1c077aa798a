"""Child process of test_resume: learn task folders onto lineage 'e2e', printing progress events.

usage: python -m tests.pipeline.child_learn PRESET_FILE TASK_DIR... (CONURE_HOME set by the parent)
"""
import json
import sys

from tasks import progress
from tasks.settings import configure_process


def main() -> None:
    import os

    import torch

    configure_process()  # as `conure` does, before Prefect is imported
    from flows.learn import learn_tasks

    torch.set_num_threads(int(os.environ.get("CONURE_TEST_THREADS", "1")))  # as the parent's in-process run

    progress.add_sink(lambda e: print("EVENT " + json.dumps(e, default=str), flush=True))
    report = learn_tasks(sys.argv[2:], lineage="e2e", preset=sys.argv[1])
    print("REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
