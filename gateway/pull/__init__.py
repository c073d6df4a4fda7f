"""Pull from the PACS: find studies on a source archive and retrieve them into the gateway
(retrospective runs, priors). See docs/pull.md."""
