"""Task logic over the Engine protocol: chat, summarize, classify."""
