"""relay: receives agents' OpenTelemetry (Claude Code first), forwards it durably to Langfuse, keeps a usage ledger."""

__version__ = "0.1.0"
