"""The OpenFlow channel of a bridge: controllers and ovs-ofctl drive the slow path.

Layers, bottom up (each a module):

* ``codec`` / ``codec15`` / ``nx`` - switch-side wire codec on os-ken's structs:
  parse what controllers send, serialize what switches send (os-ken only does
  the controller side), OpenFlow 1.0 (+NXM), 1.3, 1.4, 1.5 and the Nicira
  messages OVS tools and OVN use.
* ``connection.OpenFlowConnection`` - sans-IO channel: HELLO/version bitmap,
  framing, channel-level errors, echo and inactivity probe.
* ``convert`` - the only place that knows both os-ken and ``slowpath`` objects.
* ``handlers`` - message semantics against ``slowpath.pipeline.Pipeline`` and
  the daemon's backend; per-connection state (roles, async config, formats,
  bundles).
* ``manager.ConnectionManager`` - the thin asyncio layer, one per bridge:
  ``punix:``/``ptcp:`` listeners and ``tcp:``/``unix:`` controllers.

The daemon (``vswitch/bridge.py``) needs only ``manager``; see its docstring
for the backend interface.
"""
