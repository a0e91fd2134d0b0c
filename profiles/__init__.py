"""Platform limits as data: one TOML file per platform, validated when loaded."""
