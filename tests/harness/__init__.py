"""Real-service test harness: starts Milvus, moto, Prometheus and our own binaries on loopback,
waits for them to be ready, and stops them by PID, even when a test fails."""
