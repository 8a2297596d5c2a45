"""lepton_fed.cli."""
