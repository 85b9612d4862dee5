"""``randommask sweep``: Ray Tune over the pretraining config (see driver)."""
