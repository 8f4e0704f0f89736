"""Shared text rules for every job: scripts, languages and sentence ends, token-budgeted chunking, the ordered parallel map."""
