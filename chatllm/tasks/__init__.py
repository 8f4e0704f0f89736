"""Task logic written against the one engine contract (chatllm.engines.contract): never imports llama_cpp."""
