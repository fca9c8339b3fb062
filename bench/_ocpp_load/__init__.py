"""Parts of bench/ocpp_load.py (a package, so that `make bench` runs only the script)."""
