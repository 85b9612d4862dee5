"""Genomes to training windows: FASTA parsing (genome), k-mer tokens (tokenizer), packing into shards
(prepare), streaming windows through Ray Data (stream), and the floors a loss is read against
(floors: facts of the data, computed before training)."""
