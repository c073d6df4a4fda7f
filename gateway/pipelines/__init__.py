"""Pipelines: the plug-in boundary. A pipeline declares what it accepts, which models it
calls, how it preprocesses, and how its outputs become findings and DICOM results."""
