"""Deploy: an issued certificate written where its consumers read it, then their hooks.

atomic.py  atomic file writes (temp file, fsync, rename, fsync dir)
files.py   targets, archive of previous versions, deploy hooks with certbot's variables
"""
