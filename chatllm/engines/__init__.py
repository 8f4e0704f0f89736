"""Engines: the capability contract tasks are written against, its llama.cpp and remote implementations, chat templates, the loader."""
