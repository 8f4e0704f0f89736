"""Label probabilities for `sentiment` and `classify`: calibrated scoring, prompts per task and model family."""
