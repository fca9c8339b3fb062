"""Serve: what a TLS listener presents, checked before it is swapped in live.

tls.py          TLS profiles (gsm, modern), material checks, the live context holder
material.py     which issued certificate a listener serves (the one place that chooses)
gate_choice.py  the rollover gate's part of that choice (pure)
"""
