"""DNS: the provider seam (provider types, registry; Cloudflare and in-memory providers), DNS-01
challenge records, propagation checks, gray-cloud records."""
