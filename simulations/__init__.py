"""Hydra entry point of ``lepton-fed simulate`` (installed as ``lepton_fed.simulations``)."""
