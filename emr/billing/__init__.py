"""Service prices (the price list behind orders and claims)."""
