"""Langfuse scores relay computes from its usage ledger (Claude Code interactions and sessions, other agents'
GenAI traces) and delivers durably: figures (``figures``), declarations (``catalog``), configuration
(``config``), scoring (``service``), delivery (``outbox``), wiring (``runtime``)."""
