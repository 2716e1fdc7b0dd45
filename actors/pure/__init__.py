"""Pure logic several actors share (no I/O, no clock of their own): the breaker state machine,
prices, token estimates. It lives here, not in one actor's folder, so no actor imports another."""
