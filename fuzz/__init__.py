"""Coverage-guided fuzzing of the decoders (atheris). `make fuzz`; outside `make test`. See docs/security.md."""
