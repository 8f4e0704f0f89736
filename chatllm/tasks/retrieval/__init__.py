"""Questions over files past the window (search, passages, citations) and sentence embeddings."""
