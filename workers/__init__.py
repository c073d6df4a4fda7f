"""Workers: the Celery app and tasks, the Triton client (see issue 3 and 5)."""
