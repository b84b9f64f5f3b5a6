"""The slow path: a sans-IO OpenFlow pipeline that turns upcalled packets
into megaflows (match, mask, datapath actions) for the fast paths to cache.

fields / fields_codegen  the flow key layout and every field (shared with C/Cython/BPF)
flow                     FlowKey and the reference extractor parse_packet()
match, classifier        Match (value/mask), tuple-space Classifier, Wildcards
actions, dpactions       OpenFlow actions/instructions; datapath-action vocabulary
port, mac_learning       Port (ofport, dp_port, config, VLANs); NORMAL's MAC table
pipeline, xlate          Pipeline (flow/group/meter mods, stats, timeouts), xlate()
trace                    ofproto/trace text
"""
