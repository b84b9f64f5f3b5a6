"""Connection tracking (the distributed firewall): see tracker.py and README.md."""

from slowpath.conntrack.tracker import Conn, ConnTracker

__all__ = ["Conn", "ConnTracker"]
