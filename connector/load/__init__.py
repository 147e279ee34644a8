"""The load stage: typed Arrow batches into Parquet files or warehouse tables."""
