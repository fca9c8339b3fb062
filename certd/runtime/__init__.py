"""Runtime: `certd run`, the long-running process.

daemon.py    start/stop/reload, one check schedule per certificate, signals
jobs.py      the periodic jobs table (name, interval, lease, enabled-by-config, function)
services.py  what runs beside the renewals (OCPP endpoint + rollover engine), typed as services
watch.py     deploys by another certd process on this machine, seen at once (inotify)
workers.py   [ocpp] workers > 1: the supervisor's pool of OCPP worker processes (SO_REUSEPORT)
worker.py    one worker process (`certd serve --worker K`); worker_node.py: it as a PostgreSQL node
node_base.py what every node of a PostgreSQL store does (presence, NOTIFY, safety net), shared by
             cluster.py (a full node: deploys, takeovers) and worker_node.py (a worker: serves only)
eventloop.py uvloop when present; sdnotify.py systemd's READY/RELOADING/WATCHDOG
"""
