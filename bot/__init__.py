"""Easel: a self-hosted Discord bot that turns prompts into images."""
