"""``layer=`` of the tools that read expression: the cells with that layer as ``X`` (no copy of the data)."""

from __future__ import annotations

from anndata import AnnData

from .._errors import InputError
from ..data._keys import suggest


def with_layer_as_x(adata: AnnData, layer: str | None) -> AnnData:
    """``adata`` itself when ``layer`` is None, else a new AnnData over the same obs, var and arrays with X = the layer.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> a = ad.AnnData(np.zeros((2, 3)), layers={"lognorm": np.ones((2, 3))})
    >>> float(with_layer_as_x(a, "lognorm").X.sum()), with_layer_as_x(a, None) is a
    (6.0, True)
    """
    if layer is None:
        return adata
    if layer not in adata.layers:
        raise InputError(
            f"layer={layer!r} is not a layer of this AnnData (layers: {list(adata.layers)})."
            f"{suggest(layer, list(adata.layers))} Fix: name one of them, or layer=None to read adata.X."
        )
    return AnnData(X=adata.layers[layer], obs=adata.obs, var=adata.var, uns=adata.uns, obsm=adata.obsm, obsp=adata.obsp)
