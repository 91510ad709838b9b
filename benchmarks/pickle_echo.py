"""Celery's default way to move a DataFrame: pickled into the message and back (an anchor of dataframe.py).

BENCH_BROKER_URL=redis://... celery -A pickle_echo worker -Q bench_pickle -P solo
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

QUEUE = "bench_pickle"
TASK = "bench.identity"

app = Celery("bench_pickle", broker=os.environ["BENCH_BROKER_URL"], backend=os.environ["BENCH_BROKER_URL"])
app.conf.update(
    task_serializer="pickle",
    result_serializer="pickle",
    accept_content=["pickle"],
    result_accept_content=["pickle"],
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)


@app.task(name=TASK)
def identity(value: Any) -> Any:
    """Return the value: its trip is all there is to measure."""
    return value
