"""The lab itself: hosts, network, PKI, state, host images, its lifecycle."""
