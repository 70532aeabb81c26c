"""A production-shaped zone on one machine, on loopback (``gbadz cluster up|down|status``, ADR 0025)."""
