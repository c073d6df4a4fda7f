"""Routing: which complete studies get which pipeline, and which series go to the model."""
