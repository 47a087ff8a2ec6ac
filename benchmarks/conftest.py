"""Benchmark helpers: print each benchmark's time as a ratio to the peer of its group."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups: dict[str, list] = {}
    for bench in session.benchmarks:
        groups.setdefault(bench.group or "", []).append(bench)
    terminalreporter.section("celljepa / peer time ratios (median; < 1 means celljepa is faster)")
    for group, benches in sorted(groups.items()):
        peers = [b for b in benches if "peer" in b.name]
        if not peers:
            continue
        peer = peers[0]
        for b in benches:
            if b is peer:
                continue
            ratio = b.stats.median / peer.stats.median
            terminalreporter.write_line(f"{group}: {b.name} / {peer.name} = {ratio:.2f}")
