"""Work done while a series arrives: each instance's pixels decoded, rescaled and put on the
model grids of the pipelines that could take it, kept per series under
`<data_dir>/prefetch/`, so that the job only reads what is there (docs/pipeline.md,
"Prefetch")."""
