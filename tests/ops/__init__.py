"""The operator's tools: the fssession command, doctor, stats and inspect, Prometheus output."""
