"""agent-otel: OpenTelemetry for AI agents."""
