"""Reliability and security checks: bad input, killed processes, concurrency, untrusted code."""
