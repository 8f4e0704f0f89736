"""`ask` and `generate`: one-shot answers, schema-constrained JSON, batches of prompts, saved prompt templates."""
