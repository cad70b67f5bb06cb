"""Agent hooks: relay answering an agent *before* it spends (Claude Code's ``UserPromptSubmit`` and ``PreToolUse``
hooks), so budget rules marked ``enforce: block|warn`` stop spend instead of only reporting it."""
