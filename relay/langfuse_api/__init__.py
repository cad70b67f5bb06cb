"""relay as a Langfuse host for SDK apps: the Langfuse public REST API proxied per tenant (``proxy``)."""
