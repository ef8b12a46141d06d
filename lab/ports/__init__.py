"""Every side effect of the lab: commands, engine clients, route store, registry, proxy
runtime, Graphite. Built once into a ``Lab`` and passed down; nothing else constructs a client."""
