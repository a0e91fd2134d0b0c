"""What each task family adds to the shared export/evaluate flow (see base.Family)."""
