"""The transform stage: decompress an export and type every column with Arrow."""
