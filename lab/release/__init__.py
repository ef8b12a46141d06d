"""Facts -> plan -> apply: deploys, canaries, A/B, rollbacks; routes, judge, lock, records."""
