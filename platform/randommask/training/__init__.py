"""Pretraining: the config, the maskers, the model, one optimizer step, and the Ray Train driver and
worker. The worker's loop delegates to the checkpointer, the metrics processor and the validator."""
