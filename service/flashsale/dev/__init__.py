"""`flashsale dev` and the real Redis and PostgreSQL servers it starts on this machine.

Nothing that serves requests imports this package: the web tier, the jobs and the Kubernetes
commands run against the stores they are given. The tests start their servers from here too.
"""
