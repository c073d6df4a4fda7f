"""Health of every part the gateway is made of, one module per part: listener processes
(their own heartbeats), Celery workers, Triton and each model, the broker, the database, each
destination, the spool's disk. `grid.collect` asks them all at once; each answer is a
`PartHealth` (green, amber or red, with the time of the part's last sign of life)."""
