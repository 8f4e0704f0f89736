"""Everything chatllm keeps on disk: the conversation store, collections, the search index, the KV cache files."""
