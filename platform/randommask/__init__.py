"""randommask: RandomMask pretraining of DNA language models (overlapping k-mer BERT) on Ray."""

from randommask.tokenizer import KmerTokenizer

__all__ = ["KmerTokenizer", "__version__"]
__version__ = "0.1.0"
