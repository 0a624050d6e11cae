"""PostgreSQL access and the schema (created by `demo-app migrate`)."""

import psycopg

from demo_app import config

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
  id bigserial PRIMARY KEY,
  payload text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  processed_at timestamptz,
  processed_by text,
  release text
);
CREATE TABLE IF NOT EXISTS heartbeats (
  id bigserial PRIMARY KEY,
  scheduler_host text NOT NULL,
  beat_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS slow_tasks (
  id bigserial PRIMARY KEY,
  seconds int NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz
);
CREATE TABLE IF NOT EXISTS migrations (
  release text PRIMARY KEY,
  applied_at timestamptz NOT NULL DEFAULT now(),
  applied_by text NOT NULL
);
"""


def connect():
    return psycopg.connect(config.database_url(), connect_timeout=3, autocommit=True)
