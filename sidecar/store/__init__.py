"""The stores: Redis (short-term; scripts, circuit breaker) and PostgreSQL (long-term), each
the only place its driver is used."""
