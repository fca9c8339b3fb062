"""Renewal: when a certificate is due, and doing it for one certificate.

rules.py     pure decisions: backstop, ARI window pick, backoff, alarms, stored-material checks
ari.py       pure ARI state update (what to store after asking the CA)
check.py     Maintainer.check(name): renew / redeploy / re-run hooks, under the certificate's lease
files.py     what a certificate's target files should hold, and what they hold
records.py   the certificate's rows (managed, renewal state)
result.py    what a check did (CheckResult)
pipeline.py  issue -> deploy -> post-issuance steps (fleet chain tracking)
"""
