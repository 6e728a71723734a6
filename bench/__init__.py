"""`make bench`: engine throughput against bare Celery, API efficiency, sync lag and memory (issue 7).

Each scenario starts what it needs (embedded Valkey, both sandboxes in this process, real worker and beat
subprocesses), measures, and tears it all down; `bench/results.json` and a markdown table are the output.
"""
