"""Jobs: complete studies routed to pipelines, handed to the workers, retried or cancelled."""
