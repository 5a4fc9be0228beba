"""The operator commands' work, apart from the streaming core: start-up of run, slot management, checks, replay."""
