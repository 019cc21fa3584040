"""The encoding service: the encode pipeline, the job table and the HTTP API."""
