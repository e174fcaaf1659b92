"""Accounts: plans, users and their API keys."""
