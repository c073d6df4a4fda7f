"""Watch the models: daily statistics per pipeline and model version, control limits learned
from the first studies, and a flag when a day falls outside them (docs/model-watch.md)."""
