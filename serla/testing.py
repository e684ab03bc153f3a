"""Test helpers for apps that use Serla (placeholder until the testing module lands)."""
