"""The job queue, shared ground between the gateway and the workers: its settings, the broker
URL, and the Celery app that sends a job by ID. The task that runs a job is the workers'
(workers/tasks.py); nothing here imports them."""
