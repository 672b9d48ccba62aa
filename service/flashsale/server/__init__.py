"""What `flashsale serve` runs: gunicorn's configuration and the pod's sweeper child."""
