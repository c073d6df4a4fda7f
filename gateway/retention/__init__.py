"""Retention: purge the spool files of studies the gateway is done with (policy.py says
which, purge.py removes them, cli.py is `pacs-gateway retention`). Rows and audit stay."""
