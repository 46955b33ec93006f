"""lyre's on-disk indexes: the manifest, the BM25 index, the embedding chunk store and the Faiss shards."""
