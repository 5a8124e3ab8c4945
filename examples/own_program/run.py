"""Run the example end to end on one machine with nothing running beforehand:

    .venv/bin/python examples/own_program/run.py              # mock backend, no provider needed

A private redis-server, one worker whose PYTHONPATH holds this directory and whose
TIDYQ_PROGRAM_PACKAGES lists ``rag_programs``, the batch of questions through ``rag_programs.rag:RAG``,
the results printed, and everything started stopped again.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the producer checks items against RAG.forward() when it can import it
os.environ["TIDYQ_PROGRAM_PACKAGES"] = "rag_programs"
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def main() -> int:
    from producers.client import Client
    from producers.local_worker import PROJECT_ROOT, LocalWorker
    from shared.redis_server import RedisServer

    with tempfile.TemporaryDirectory(prefix="tidyq-example-") as tmp:
        redis_server = RedisServer(directory=Path(tmp))
        redis_server.start()
        worker = LocalWorker(redis_server.url, concurrency=1, log_path=Path(tmp) / "worker.log", cwd=tmp,
                             env={"TIDYQ_PROGRAM_PACKAGES": "rag_programs",
                                  "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(HERE)])})
        try:
            worker.start(timeout=90)
            job = Client(redis_server.url).submit_file(HERE / "questions.jsonl", program="rag_programs.rag:RAG",
                                                       backend="mock")
            failed = 0
            for row in job.results(timeout=120):
                failed += row["status"] != "succeeded"
                print(json.dumps({k: row[k] for k in ("custom_id", "status", "outputs", "error", "attempts")}))
            print(f"job {job.id}: {job.status()['counts']}", file=sys.stderr)
            return 1 if failed else 0
        finally:
            worker.stop()
            redis_server.close()


if __name__ == "__main__":
    raise SystemExit(main())
