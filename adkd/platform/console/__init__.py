"""What adkd prints: terminal tables that fit, and third-party output kept quiet unless --debug."""
