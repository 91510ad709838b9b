"""The claim check, proven on the wire: a 200 MB input leaves a message of a few KB in Redis."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import redis

from jupyter_celery.core.messages import JobSpec
from jupyter_celery.core.objects import ObjectTag
from jupyter_celery.core.protocol import PYTHON_Q, new_job_id
from jupyter_celery.kernel.client import Client

LIMIT = 64 * 1024


def test_a_200_mb_input_travels_by_key_and_the_message_stays_under_64_kb(stack):
    # The kernel sends to database 1, where no worker listens, so the message stays in the queue list
    # to be read byte for byte; then those very bytes are handed to the workers' database 0.
    quiet_broker = stack.url.rsplit("/", 1)[0] + "/1"
    client = Client(stack.settings(BROKER_URL=quiet_broker, RESULT_URL=stack.url, EVENTS_URL=stack.url))
    quiet = redis.Redis.from_url(quiet_broker)
    try:
        rows = 25_000_000
        frame = pd.DataFrame({"x": np.zeros(rows)})  # 200 MB of float64
        assert frame.memory_usage(index=False).sum() == 200_000_000
        job_id = new_job_id()
        encoded = client.codec.encode("frame", frame, ObjectTag("tester", job_id, "input"))
        assert encoded["size"] > 200_000_000
        spec = JobSpec(
            id=job_id, kind="cell", code="rows = len(frame)\ntotal = float(frame.x.sum())\n", owner="tester",
            inputs={"frame": encoded}, outputs=("rows", "total"),
        )  # fmt: skip
        job = client.submit(spec, objects=client.codec.keys_of(encoded))

        (raw,) = quiet.lrange(PYTHON_Q, 0, -1)  # the message exactly as it reached Redis
        assert len(raw) < LIMIT, len(raw)
        envelope = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        sent = args[0]["inputs"]["frame"]
        assert sent == {
            "enc": "frame",
            "format": "ipc",
            "kind": "dataframe",
            "key": encoded["key"],
            "size": sent["size"],
        }

        stack.redis.lpush(PYTHON_Q, raw.decode())  # the same bytes, now where the workers listen
        quiet.delete(PYTHON_Q)
        values, _ = job.outputs(timeout=120, strict=True)
        assert values == {"rows": rows, "total": 0.0}
    finally:
        quiet.delete(PYTHON_Q)
        quiet.close()
        client.close()
