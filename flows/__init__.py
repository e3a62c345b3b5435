"""The framework-free core of recovery-bot: flows as data, the engine that runs them, and storage."""
