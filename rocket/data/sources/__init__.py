"""Corpus sources: local text files, JSONL/Parquet records, streamed Hugging Face datasets."""
