"""Small pipelines and a recording datapath for the slow-path tests."""

from slowpath import actions as A
from slowpath import dpactions as dp
from slowpath import odp_execute
from slowpath.flow import parse_packet
from slowpath.match import Match
from slowpath.pipeline import FlowMod, Pipeline
from slowpath.port import Port


def bridge(n: int = 4) -> Pipeline:
    """A fail-secure pipeline with ports 1..n on datapath ports 101..."""
    p = Pipeline(fail_mode="secure")
    for i in range(1, n + 1):
        p.set_port(Port(i, f"p{i}", dp_port=100 + i))
    return p


def add(p: Pipeline, text: str, actions=(), table: int = 0, priority: int = 100,
        instructions=None) -> None:
    insts = instructions or (A.ApplyActions(tuple(actions)),)
    p.flow_mod(FlowMod("add", table, priority, Match.parse(text), instructions=insts), 0.0)


def outputs(actions) -> list[int]:
    return [a.dp_port for a in actions if isinstance(a, dp.Output)]


class Recorder:
    """The datapath side of slowpath.odp_execute: what went out where."""

    def __init__(self):
        self.out: list[tuple[int, bytes]] = []

    def output(self, dp_port, frame, key):
        self.out.append((dp_port, bytes(frame)))

    def recirculate(self, frame, key):
        pass

    def meter(self, meter_id, frame):
        return True


def execute(actions, data: bytes, in_port: int = 1) -> list[tuple[int, bytes]]:
    """Run datapath ``actions`` on ``data`` in Python: [(dp_port, frame)]."""
    rec = Recorder()
    odp_execute.execute(data, parse_packet(data, in_port), actions, rec)
    return rec.out
