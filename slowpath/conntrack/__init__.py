"""Connection tracking (the distributed firewall): see tracker.py and README.md."""

from slowpath.conntrack.tracker import ConnTracker, Conn  # noqa: F401
