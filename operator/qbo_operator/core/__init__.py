"""The small shared core every process imports: names, models, configuration, signing, schedules,
the Kubernetes write surface and the token Secret."""
