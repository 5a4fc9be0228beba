"""Configuration: the settings of every part, secrets, and the rules they are validated against once."""
