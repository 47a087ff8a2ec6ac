"""Gene-name spellings shared by every reader of gene names.

The reference-genome prefix Cell Ranger writes for multi-genome references (``hg19_ISG15``, ``GRCh38-ISG15``,
``mm10___Actb``) is read here, once, for gene sets, GO features and feature-set harmonisation.
"""

from __future__ import annotations

import re

#: a reference-genome prefix of a gene name, as Cell Ranger writes for multi-genome references
GENOME_PREFIX = re.compile(r"^(?:hg19|hg38|GRCh37|GRCh38|mm9|mm10|GRCm38|GRCm39)(?:_+|-)")


def strip_genome_prefix(name: str) -> str:
    """``name`` without a reference-genome prefix (unchanged when it has none).

    >>> strip_genome_prefix("hg19_ISG15"), strip_genome_prefix("xx_ISG15")
    ('ISG15', 'xx_ISG15')
    """
    return GENOME_PREFIX.sub("", name, count=1)


def genome_prefix(name: str) -> str | None:
    """The reference-genome prefix of ``name`` (``"hg19_"``), or ``None``.

    >>> genome_prefix("GRCh38-CD3E"), genome_prefix("CD3E")
    ('GRCh38-', None)
    """
    m = GENOME_PREFIX.match(name)
    return m.group(0) if m else None
