"""lepton_fed.client."""
