"""Published perturbation models scored beside celljepa's: scGen, GEARS, CPA and State.

Each peer is a :class:`PeerModel`, a :class:`~celljepa.models.base.PerturbationModel` of role ``"peer"``: it
joins the pool of non-JEPA methods whose best member, chosen on validation conditions, is the comparator of a
verdict. A peer trains with its own code, its own early stopping and its published settings sized to the data
(``_runners/_rules.py``), on the same cells as the refitted baselines, in its own environment (an isolated
virtual environment made by :func:`install_peer`, or this one when its package imports here), exchanging the
fold's data and its predictions as ``.h5ad`` files with a subprocess; nothing is downloaded at run time. A
condition it cannot predict gets no prediction (None: n/a).

Examples
--------
>>> from celljepa import peers
>>> sorted(peers.PEERS)
['cpa', 'gears', 'scgen', 'state']
>>> peers.peer_spec("gears").predicts.split(",")[0]
'gene perturbations'
"""

from ._env import NoSpaceError, PeerEnvironment, install_peer, locate_peer, peer_status, peers_home, remove_peer
from ._model import PeerModel
from ._registry import PEERS, PeerSpec, peer_spec

__all__ = [
    "PEERS",
    "PeerEnvironment",
    "PeerModel",
    "PeerSpec",
    "NoSpaceError",
    "install_peer",
    "locate_peer",
    "parse_peers",
    "peer_spec",
    "peer_status",
    "peers_home",
    "remove_peer",
]


def parse_peers(value) -> tuple[str, ...]:
    """``"scgen,gears"`` (or a list) → ``("scgen", "gears")``, each a known peer, no repeats."""
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(peer_spec(str(v).strip()).name for v in items if str(v).strip()))
    return names
