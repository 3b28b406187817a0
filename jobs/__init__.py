"""The shoal model: job specs, cluster records, and the readers that turn files into jobs."""
