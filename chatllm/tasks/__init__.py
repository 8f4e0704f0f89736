"""Task logic written against the one engine contract (chatllm.runtime.contract): never imports llama_cpp."""
