"""pyvswitch daemon: bridges, ports, OVSDB and OpenFlow wired onto the datapath."""

__version__ = "0.1.0"
