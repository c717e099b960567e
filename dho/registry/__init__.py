"""Registry: organisations, patients, care teams, devices, gateways."""
