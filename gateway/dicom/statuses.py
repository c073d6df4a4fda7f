"""C-STORE response statuses the listener returns (PS3.4 Annex B.2.3, PS3.7 Annex C)."""

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # refused: out of resources (disk full, free-space threshold)
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC210  # dataset could not be parsed, or body and transfer syntax disagree
PROCESSING_FAILURE = 0x0110  # internal error (database unavailable, ...): sender may retry
