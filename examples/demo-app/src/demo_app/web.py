"""The web service: liveness, readiness, metrics, version, and an endpoint that writes and enqueues.

Metrics live in the process: run gunicorn with one worker and threads (--workers 1 --threads N) so /metrics
covers every request of the instance.
"""

import time

import redis
from flask import Flask, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from demo_app import _build, config, db

app = Flask(__name__)

REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "status"])
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request duration",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0),
)
IN_PROGRESS = Gauge("http_requests_inprogress", "HTTP requests in progress")


@app.before_request
def _start():
    g.started = time.monotonic()
    IN_PROGRESS.inc()


@app.after_request
def _count(response):
    IN_PROGRESS.dec()
    if request.path != "/metrics":
        REQUESTS.labels(request.method, str(response.status_code)).inc()
        LATENCY.labels(request.method).observe(time.monotonic() - g.started)
    return response


@app.get("/health")
@app.get("/api/v1/health")
def health():
    return jsonify(status="ok", version=_build.VERSION)


@app.get("/ready")
@app.get("/api/v1/readiness")
def ready():
    checks = {}
    if _build.BROKEN:
        checks["release"] = "built broken on purpose (rollout tests)"
    try:
        with db.connect() as conn:
            conn.execute("SELECT 1")
        checks["postgresql"] = "ok"
    except Exception as exc:  # any failure means not ready
        checks["postgresql"] = f"error: {exc.__class__.__name__}"
    try:
        redis.Redis.from_url(config.redis_url(), socket_timeout=2).ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {exc.__class__.__name__}"
    ok = all(v == "ok" for k, v in checks.items() if k != "release") and not _build.BROKEN
    return jsonify(ready=ok, checks=checks, version=_build.VERSION), 200 if ok else 503


@app.get("/version")
def version():
    return jsonify(version=_build.VERSION)


@app.get("/metrics")
def metrics():
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


@app.post("/api/items")
def create_item():
    from demo_app.tasks import process_item

    payload = (request.get_json(silent=True) or {}).get("payload", "")
    with db.connect() as conn:
        item_id = conn.execute("INSERT INTO items (payload) VALUES (%s) RETURNING id", (payload,)).fetchone()[0]
    process_item.delay(item_id)
    return jsonify(id=item_id, version=_build.VERSION), 201


@app.get("/api/items/<int:item_id>")
def get_item(item_id):
    with db.connect() as conn:
        row = conn.execute(
            "SELECT id, payload, processed_at IS NOT NULL, processed_by FROM items WHERE id = %s", (item_id,)
        ).fetchone()
    if row is None:
        return jsonify(error="not found"), 404
    return jsonify(id=row[0], payload=row[1], processed=row[2], processed_by=row[3])


@app.post("/api/slow")
def create_slow():
    from demo_app.tasks import slow

    seconds = int((request.get_json(silent=True) or {}).get("seconds", 10))
    with db.connect() as conn:
        row_id = conn.execute("INSERT INTO slow_tasks (seconds) VALUES (%s) RETURNING id", (seconds,)).fetchone()[0]
    slow.delay(row_id, seconds)
    return jsonify(id=row_id), 201
