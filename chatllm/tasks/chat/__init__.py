"""Conversations: turns through the chat template, the window, undo/retry, the store, transcripts."""
