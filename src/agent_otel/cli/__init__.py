"""The agent-otel command line."""
