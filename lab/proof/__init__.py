"""What proves the claims: load, its reports, the bench and the negative controls. Proof code
is a client: it reaches ``lab.release`` only through its public API."""
