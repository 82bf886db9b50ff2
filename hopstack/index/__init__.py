"""Corpus ingestion and the on-disk index (documents, BM25, FAISS)."""
