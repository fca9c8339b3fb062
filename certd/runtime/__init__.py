"""Runtime: `certd run`, the long-running process.

daemon.py    start/stop/reload, one check schedule per certificate, signals
jobs.py      the periodic jobs table (name, interval, lease, enabled-by-config, function)
services.py  what runs beside the renewals (OCPP endpoint + rollover engine), typed as services
watch.py     deploys by another certd process on this machine, seen at once (inotify)
eventloop.py uvloop when present; sdnotify.py systemd's READY/RELOADING/WATCHDOG
"""
