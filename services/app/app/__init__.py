"""cdlab's demo service: a small user-registration API with state in PostgreSQL."""
