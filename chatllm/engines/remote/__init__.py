"""Engines on OpenAI-compatible servers: llama.cpp's llama-server, and any chat-completions API."""
