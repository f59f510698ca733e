"""``fedledger demo``: federated training among five hospitals on a ledger, end to end.

- :mod:`fedledger.demo.data`: the Wisconsin breast-cancer data (Wolberg, Street, Mangasarian,
  UCI 1995, as scikit-learn ships it), standardized with training statistics and split across
  hospitals non-IID (Dirichlet over labels);
- :mod:`fedledger.demo.model`: a numpy logistic regression, local training, FedAvg/FedProx,
  clipped deltas, centralized and local-only baselines;
- :mod:`fedledger.demo.scenario`: the consortium, consent, the rounds through
  :class:`fedledger.federated.FederatedRound`, the figures and the artefacts.

Needs the ``demo`` extra (``pip install 'fedledger[demo]'``: scikit-learn, matplotlib, rich);
the modules import them on first use. See docs/demo.md.
"""

from __future__ import annotations
