"""FedAvg-family strategies: the server update is a function of the MEAN client update.

They aggregate correctly from a sum of updates alone, so they compose with secure
aggregation and with central DP (noise on the sum). Built on flwr's Message-API
strategies; lepton-fed's round loop calls their ``configure_train`` (node sampling,
server-round config) and ``aggregate_train`` (mean, then the server optimizer).
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAdagrad as _FedAdagrad
from flwr.serverapp.strategy import FedAdam as _FedAdam
from flwr.serverapp.strategy import FedAvg as _FedAvg
from flwr.serverapp.strategy import FedProx as _FedProx
from flwr.serverapp.strategy import FedYogi as _FedYogi

__all__ = ["FedAdagrad", "FedAdam", "FedAvg", "FedProx", "FedYogi"]


class FedAvg(_FedAvg):
    """Example-weighted FedAvg (McMahan et al. 2017)."""

    secagg_compatible = True


class FedProx(_FedProx):
    """FedProx (Li et al. 2020): sends ``proximal-mu``; the client adds the proximal term."""

    secagg_compatible = True


class FedAdam(_FedAdam):
    """FedAdam (Reddi et al. 2021): Adam applied by the server to the mean update."""

    secagg_compatible = True


class FedYogi(_FedYogi):
    """FedYogi (Reddi et al. 2021)."""

    secagg_compatible = True


class FedAdagrad(_FedAdagrad):
    """FedAdagrad (Reddi et al. 2021)."""

    secagg_compatible = True
