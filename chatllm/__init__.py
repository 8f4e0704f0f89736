"""chatllm: local LLMs at the terminal."""

__version__ = "0.1.0"
