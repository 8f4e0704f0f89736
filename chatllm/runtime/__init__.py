"""Where models live and run: the engine contract, the llama.cpp engine, the registry, downloads, GGUF checks, devices."""
