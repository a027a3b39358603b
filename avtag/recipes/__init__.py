"""Corpus recipes (one module per corpus): pair lists with clips, report, pack, write manifests."""
