"""flashsale: sells exactly N items every period, never more, never to one user past the limit."""
