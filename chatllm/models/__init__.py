"""Model files: the registry (models.toml), Hub downloads, sha256 verification, the GGUF header, `serve`."""
