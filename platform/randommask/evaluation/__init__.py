"""Judging models: the analysis report (loss dynamics, k-mer embeddings, attention), the GUE datasets
and their scores, and the linear probe on frozen embeddings."""
