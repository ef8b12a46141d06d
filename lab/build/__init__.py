"""Images on cd: BuildKit, git, static checks."""
