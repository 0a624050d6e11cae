"""selfhosted.stack demo application: web (Flask + gunicorn), Celery worker and beat, PostgreSQL and Redis."""
