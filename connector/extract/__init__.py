"""The extract stage: DiVA's export, poll and download cycle over HTTP.

- `client`: `DivaClient`, every request to DiVA (auth, program, timeouts).
- `retry` and `responses`: the one retry policy and the classification of
  DiVA's responses into success, retry, expired export and failure.
- `budget`: the client-side request budget shared by a run.
- `export`: `export_window`, the state machine of one window.
- `download` and `integrity`: streaming a file to disk, and checking it.
- `rundir`: `RunDirectory`, the tokens and files a restarted run resumes.

This stage deals with HTTP and files only. The transform stage reads the
files.
"""
