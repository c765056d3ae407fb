"""`roomstream bench`: the fan-out benchmark.

Modules: `command` (the orchestrator: rooms, workers, gateway CPU / RSS sampling, report),
`worker` (a load-generator process holding many clients), `stats` (latency histogram, pure),
`procstat` (CPU and RSS of processes from /proc).
"""
