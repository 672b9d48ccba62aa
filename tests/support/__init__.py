"""What the tests share; no test lives here, and no test imports another test module or a
conftest (conftests hold fixtures only). One module a job:

- `service`: the service's environment in a test, its long period and a clock moved by hand.
- `stores`: PostgreSQL and Redis behind the service's back: a query, a client, a flush, a trap
  that loses a store's answers, the records' partitions.
- `servers`: Redis topologies only the tests need (Sentinel with a replica, a Cluster).
- `processes`: the real console script: a command run, `flashsale serve` on a free port
  (`serving`, and `served_stack` on a database of its own), its gunicorn children.
- `crowd`: many real HTTP clients running a sale to the end, and the checks that end a fault test.
- `api`: the app in this process, every response checked against /openapi.json and every
  checkout looked for as a row (`Harness`, `Stack`, `Api`).
- `openapi`: the schema check of a response, and the app's routes.
- `identity`: signing keys and tokens for the identity modes.
- `chart`: the Helm chart rendered by the real `helm`.
- `tools`: the programs some tests need from the system (`require`).

This file imports nothing outside the standard library: scripts/test-deps.sh runs
`python3 -m tests.support.tools` with the system's python3, before .venv exists.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
