"""Billing: credit packs, Stripe events and purchases."""
