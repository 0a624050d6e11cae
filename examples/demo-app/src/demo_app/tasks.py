"""Celery app: the worker processes items, the scheduler (beat) records a heartbeat."""

import os
import socket
import time

from celery import Celery

from demo_app import _build, config, db

celery = Celery("demo_app", broker=config.broker_url())
celery.conf.update(
    task_acks_late=True,  # a task interrupted by a crash is delivered again
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    beat_schedule={
        "heartbeat": {
            "task": "demo_app.tasks.heartbeat",
            "schedule": float(os.environ.get("DEMO_HEARTBEAT_SECONDS", "5")),
            "args": (socket.gethostname(),),  # evaluated in the beat process: which host schedules
        }
    },
)


@celery.task(name="demo_app.tasks.process_item")
def process_item(item_id):
    with db.connect() as conn:
        conn.execute(
            "UPDATE items SET processed_at = now(), processed_by = %s, release = %s WHERE id = %s",
            (socket.gethostname(), _build.VERSION, item_id),
        )


@celery.task(name="demo_app.tasks.slow")
def slow(task_row_id, seconds):
    time.sleep(seconds)
    with db.connect() as conn:
        conn.execute("UPDATE slow_tasks SET finished_at = now() WHERE id = %s", (task_row_id,))


@celery.task(name="demo_app.tasks.heartbeat")
def heartbeat(scheduler_host):
    with db.connect() as conn:
        conn.execute("INSERT INTO heartbeats (scheduler_host) VALUES (%s)", (scheduler_host,))
