"""Credits: the ledger and the one service that moves credits."""
