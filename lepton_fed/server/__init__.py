"""lepton_fed.server."""
