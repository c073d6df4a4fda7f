"""Sending result objects to destinations (C-STORE, STOW-RS) with per-object state."""
