"""The job runner: one job (a complete study and its pipeline) through its stages, from the
models to results at the PACS; its analysers and its findings on disk."""
