"""Small real HTTP servers standing in for national services the tests cannot reach."""
