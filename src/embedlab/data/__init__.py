"""Data: the typed data sets embedlab works on, and the loaders that build them from files."""

from embedlab.data.dataset import Document, Query, RetrievalDataset, ScoredPair, ScoredPairs

__all__ = ["Document", "Query", "RetrievalDataset", "ScoredPair", "ScoredPairs"]
