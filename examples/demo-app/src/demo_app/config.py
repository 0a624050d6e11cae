"""Settings from the environment (the app role writes them to the release's environment file)."""

import os


def database_url():
    return os.environ.get("DATABASE_URL", "postgresql://app@localhost/app")


def redis_url():
    return os.environ.get("REDIS_URL", "redis://localhost:6379/0")


def broker_url():
    return os.environ.get("CELERY_BROKER_URL", redis_url())
