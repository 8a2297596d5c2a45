"""lepton_fed.deploy."""
