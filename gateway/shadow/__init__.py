"""Shadow mode: a rule's second pipeline runs on the same series, its results are stored and
never delivered, and each study's results are compared with the primary's
(docs/model-watch.md)."""
