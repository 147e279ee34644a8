"""The extract stage: DiVA's export, poll and download cycle over HTTP."""
