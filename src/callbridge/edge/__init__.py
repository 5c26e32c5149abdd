"""The edge: what sits between the public internet and callbridge (proxy config, diagnosis)."""
