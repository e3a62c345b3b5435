"""The recovery methods, one module each, and the shared steps they use."""
