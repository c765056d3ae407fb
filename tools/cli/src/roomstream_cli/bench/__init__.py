"""`roomstream bench`: the fan-out benchmark; `roomstream bench publish`: the publish API.

Modules: `command` (the orchestrator: rooms, workers, gateway CPU / RSS sampling, report),
`worker` (a load-generator process holding many clients), `stats` (latency histogram, pure),
`procstat` (CPU and RSS of processes from /proc), `publish` (the publish API benchmark).
"""
