"""The names a document is about, the sentences that mention them, and the family ties it states."""
