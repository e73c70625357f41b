"""What a user does (train, explore, curate), without Qt: the app's panels and the command line
drive these sessions, and tests drive them directly."""
