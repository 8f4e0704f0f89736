"""Translation of documents of any length, structure kept, checked part by part."""
