"""DNS: the Cloudflare adapter, DNS-01 challenge records, propagation checks, gray-cloud records."""
