"""certd's HTTP surface: Prometheus metrics, /livez and /readyz, a JSON status and a status page.

Importing this package is cheap; aiohttp and Jinja2 load with certd.http.service,
which only `certd run` and `certd serve` import (when [http] is enabled).
"""
